"""events/process_id.py: the cached process id is the real one, in a forked child too."""

from __future__ import annotations

import os

from oauthledger.events.process_id import current_pid


def test_the_cached_id_is_this_process() -> None:
    assert current_pid() == os.getpid()


def test_a_forked_child_gets_its_own_id() -> None:
    parent = current_pid()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, never return into pytest
        try:
            ok = current_pid() == os.getpid() and current_pid() != parent
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    assert current_pid() == parent == os.getpid()
