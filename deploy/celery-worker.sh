#!/bin/sh
# A Celery worker: projection, catch-up, expiry sweep and rebuild tasks.
# Needs OAUTHLEDGER_DATABASE_URL, OAUTHLEDGER_REDIS_URL, OAUTHLEDGER_BROKER_URL (and the
# secret key file). Run as many as you like, on any hosts: every task is idempotent.
set -eu
exec oauthledger worker --concurrency "${OAUTHLEDGER_WORKER_CONCURRENCY:-2}" "$@"
# Equivalent: celery -A oauthledger.workers.celery_app worker --without-gossip --without-mingle \
#   --without-heartbeat
