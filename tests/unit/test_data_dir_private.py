"""The embedded data directory and its files are private to the account that runs it:
they hold password hashes and sealed secrets."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from oauthledger.events import catalog as ev
from oauthledger.events.connections import open_sealer, open_store
from oauthledger.events.settings import load_settings


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_embedded_data_dir_is_0700_and_its_files_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)  # the usual umask, which would give 0755 / 0644
    try:
        data = tmp_path / "data"
        settings = load_settings({"OAUTHLEDGER_DATA_DIR": str(data)})
        store = open_store(settings)
        open_sealer(settings)
        store.append("user-alice", 0, [ev.UserRegistered(name="alice", password_hash="x",
                                                         admin=False, display_name="Alice")])
        store.engine.dispose()
    finally:
        os.umask(old)
    assert _mode(data) == 0o700
    files = [p for p in data.iterdir() if p.is_file()]
    assert any(p.name == "events.sqlite3" for p in files)
    assert {p.name: _mode(p) for p in files} == {p.name: 0o600 for p in files}


def test_an_existing_world_readable_installation_is_tightened(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    db = data / "events.sqlite3"
    db.touch(mode=0o644)
    os.chmod(data, 0o755)
    os.chmod(db, 0o644)
    open_store(load_settings({"OAUTHLEDGER_DATA_DIR": str(data)})).engine.dispose()
    assert _mode(data) == 0o700
    assert _mode(db) == 0o600
