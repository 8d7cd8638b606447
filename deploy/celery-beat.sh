#!/bin/sh
# Celery beat: sends the catch-up task every OAUTHLEDGER_CATCHUP_INTERVAL (default 5 s)
# and the expiry sweep every OAUTHLEDGER_SWEEP_INTERVAL (default 60 s). Run exactly one;
# a second one by mistake only duplicates idempotent tasks.
set -eu
exec oauthledger beat "$@"
# Equivalent: celery -A oauthledger.workers.celery_app beat --schedule "$OAUTHLEDGER_DATA_DIR/celerybeat-schedule"
