"""This process's id, without a system call each time it is asked.

``os.getpid()`` is a system call (the C library stopped caching it), and the hot path
asks often: prometheus-client before every increment of a multiprocess metric (to notice
a fork), the Redis round trip before every batch (a forked child must not use its
parent's sockets). The id only changes in a child made by ``fork``, and Python runs the
``os.register_at_fork`` hooks in every child it forks (gunicorn's workers, Celery's pool,
multiprocessing), so it is read once per process here and again in each child.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """The id of the process running this call (``os.getpid()``, cached per process)."""
    return _pid
