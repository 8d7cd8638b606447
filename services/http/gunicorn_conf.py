"""gunicorn configuration for oauthledger (used by `oauthledger serve` and by deploy/).

Names the app only as a string; settings come from oauthledger.events.settings like everywhere else.
"""

import multiprocessing

from oauthledger.events.settings import load_settings

_settings = load_settings()

wsgi_app = "oauthledger.services.http.app:get_app()"
bind = ["127.0.0.1:8080"]
# The embedded default keeps its projection in process memory: one process only.
workers = 1 if _settings.embedded_broker else multiprocessing.cpu_count() * 2 + 1
worker_class = "sync"
# Each worker opens its own connections after the fork (nothing connects at import).
preload_app = False
timeout = 30
graceful_timeout = 20
keepalive = 5
accesslog = "-"
# Secret-bearing query parameters (a PLAINTEXT signature, a verifier) never reach the log.
logger_class = "oauthledger.services.http.access_log.RedactingLogger"
errorlog = "-"
loglevel = "info"
# gunicorn's control socket defaults to one path per user: several instances on one host
# (front ends, tests) would fight over it, and nothing here uses it.
control_socket_disable = True
# Forwarded headers are trusted per OAUTHLEDGER_TRUSTED_PROXIES by the app itself.
forwarded_allow_ips = ""
