"""events/process_id.py: the cached process id is the real one, in a forked child too."""

from __future__ import annotations

import os

from oauthledger.events.process_id import current_pid
from tests.support import true_in_a_forked_child


def test_the_cached_id_is_this_process() -> None:
    assert current_pid() == os.getpid()


def test_a_forked_child_gets_its_own_id() -> None:
    parent = current_pid()
    assert true_in_a_forked_child(lambda: current_pid() == os.getpid() != parent)
    assert current_pid() == parent == os.getpid()
