"""The front end's process: gevent's monkey-patching first, then gunicorn.

``oauthledger serve`` execs ``python -m oauthledger.services.http.server -c
python:oauthledger.services.http.gunicorn_conf ...``. gunicorn's gevent worker patches the
standard library itself, but only in each worker after the fork, when gunicorn's master
has long imported ``ssl`` (gevent then warns that ssl-using code may misbehave). Patching
here, before anything else is imported, gives master and workers one consistent, fully
cooperative standard library (docs/operations.md, "Worker model")."""

from __future__ import annotations


def main() -> None:
    """Patch the standard library for gevent, then run gunicorn's command line."""
    from gevent import monkey

    monkey.patch_all()
    # Imported only after patching, by design (see the module docstring).
    from gunicorn.app.wsgiapp import run

    run(prog="oauthledger serve")


if __name__ == "__main__":
    main()
