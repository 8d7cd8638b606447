"""``oauthledger keys``: the sealing keys in the key file (settings.secret_key_file).

Rotation adds a key and makes it active; old keys stay in the ring so every secret
sealed under them still opens (events/sealing.py). Key material is never printed.
Running servers and workers follow the key file (events.sealing.Sealer.from_file), so
a rotation needs no restart. With several hosts, ``rotate --stage`` adds the key without
activating it; once the file is on every host, ``activate`` switches to it.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from oauthledger.events.errors import SealingError
from oauthledger.events.sealing import KeyRing, Sealer, load_key_ring, save_key_ring
from oauthledger.services.cli.main import CliContext, CliError, pass_cli
from oauthledger.services.cli.store_access import db_errors, open_store


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the key file: two rotations at once must not both
    read the old ring and have the second write drop the first one's new key (a lost
    key means secrets that can never be opened again)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path.with_name(path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise CliError(f"cannot lock key file {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _sealed_key_ids(value: Any, key: str = "") -> Iterator[str]:
    """Key ids of the sealed values in an event's data (``*_sealed`` fields, nested)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _sealed_key_ids(v, k)
    elif key.endswith("_sealed") and isinstance(value, str) and value.count(".") >= 2:
        yield Sealer.key_id(value)


@click.group("keys")
def keys() -> None:
    """Sealing keys: list and rotate."""


@keys.command("rotate")
@click.option("--stage", is_flag=True,
              help="Add the new key without making it active (activate it later with "
                   "`keys activate`, once the key file is on every host).")
@pass_cli
def rotate(cli_ctx: CliContext, stage: bool) -> None:
    """Add a new sealing key and make it active (with --stage: only add it); prints its
    id. Old keys stay to open older secrets."""
    path = Path(cli_ctx.settings.secret_key_file)
    with _locked(path):
        if path.exists():
            ring = load_key_ring(path, create=False)
            previous = ring.active
            new_id = ring.add_key()
            if not stage:
                ring.activate(new_id)
        else:
            ring, previous = KeyRing.generate(), None
            new_id = ring.active
        _save(path, ring)
    click.echo(new_id)
    if stage and previous:
        click.echo(f"{path}: added key {new_id}, not active (still {previous}); copy the key "
                   f"file to every host, then run `oauthledger keys activate {new_id}`",
                   err=True)
        return
    click.echo(
        f"{path}: active key is now {new_id}"
        + (f" (was {previous}; kept to open older secrets)" if previous else " (new key file)")
        + "; running servers and workers on this host seal with it from their next seal"
        " (copy the key file to every other host)",
        err=True,
    )


@keys.command("activate")
@click.argument("key_id")
@pass_cli
def activate(cli_ctx: CliContext, key_id: str) -> None:
    """Make KEY_ID (already in the key file) the key new secrets are sealed with."""
    path = Path(cli_ctx.settings.secret_key_file)
    if not path.exists():
        # Before the lock: its file would start a data directory where there is none.
        raise CliError(_missing(path))
    with _locked(path):
        ring = load_key_ring(path, create=False)
        previous = ring.active
        ring.activate(key_id)
        _save(path, ring)
    click.echo(f"{path}: active key is now {key_id} (was {previous}); running servers and "
               "workers on this host seal with it from their next seal", err=True)


def _missing(path: Path) -> str:
    """The line for a key file that is not there: where the command looked, and how
    to point elsewhere or start one."""
    return (f"key file {path.absolute()} does not exist (it is created on first use, or by "
            "`oauthledger keys rotate`) — fix: point to the installation with --data-dir "
            "DIR, OAUTHLEDGER_DATA_DIR or OAUTHLEDGER_SECRET_KEY_FILE")


def _save(path: Path, ring: KeyRing) -> None:
    try:
        save_key_ring(path, ring)
    except OSError as exc:
        raise CliError(f"cannot write key file {path}: {exc.strerror}") from None


@keys.command("list")
@click.option("--usage", is_flag=True,
              help="Also count the sealed values in the event log under each key.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text",
              show_default=True)
@pass_cli
@db_errors
def list_keys(cli_ctx: CliContext, usage: bool, fmt: str) -> None:
    """List key ids and which one is active."""
    path = Path(cli_ctx.settings.secret_key_file)
    try:
        ring = load_key_ring(path, create=False)
    except SealingError as exc:
        raise CliError(_missing(path) if not path.exists() else str(exc)) from None
    counts: Counter[str] = Counter()
    if usage:
        from oauthledger.services.cli.events import row_object

        for rec in open_store(cli_ctx).read_all(0):
            counts.update(_sealed_key_ids(row_object(rec)["data"]))
    unknown = sorted(set(counts) - set(ring.keys))
    if fmt == "json":
        report: dict[str, Any] = {
            "file": str(path),
            "active": ring.active,
            "keys": [
                {"id": kid, "active": kid == ring.active,
                 **({"sealed_values": counts[kid]} if usage else {})}
                for kid in ring.keys
            ],
        }
        if usage:
            report["unknown_key_ids"] = {kid: counts[kid] for kid in unknown}
        click.echo(json.dumps(report, indent=2))
        return
    for kid in ring.keys:
        line = kid + ("  active" if kid == ring.active else "")
        if usage:
            line += f"  sealed values: {counts[kid]}"
        click.echo(line)
    for kid in unknown:
        # Secrets sealed under a key that is gone can never be opened again.
        click.echo(f"{kid}  MISSING from the key file  sealed values: {counts[kid]}")


COMMANDS = [keys]
