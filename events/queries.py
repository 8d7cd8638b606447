"""Store queries that find streams by a field of their events (admin pages, removal).

These scan events of the given types with a substring match on the canonical JSON
(``"field":"value"`` is exact because the store writes canonical, sorted, compact JSON).
They run at admin rates only, never on the signed-request hot path. A value the
database cannot hold (:func:`oauthledger.events.store.storable`: NUL, an unpaired
surrogate) matches nothing and is never sent, the same on both backends.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa

from oauthledger.events.store import EventStore, storable


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def streams_with(
    store: EventStore, types: Sequence[str], field: str, value: str
) -> list[str]:
    """Stream ids holding an event of one of ``types`` whose ``field`` equals ``value``."""
    needle = json.dumps(field) + ":" + json.dumps(value, ensure_ascii=False)
    # JSON escapes NUL, but an unpaired surrogate stays as is (ensure_ascii=False): no
    # stored event can hold it, nor a type name NUL (the identifier rule, events/store.py).
    types = [t for t in types if storable(t)]
    if not types or not storable(needle):
        return []
    pattern = "%" + _like_escape(needle) + "%"
    stmt = sa.text(
        "SELECT DISTINCT stream_id FROM events WHERE type IN :types "
        "AND data LIKE :pattern ESCAPE '\\'"
    ).bindparams(sa.bindparam("types", expanding=True))
    with store.engine.connect() as conn:
        rows = conn.execute(stmt, {"types": types, "pattern": pattern}).fetchall()
    return sorted(r[0] for r in rows)


def streams_of_type(store: EventStore, type_name: str) -> list[str]:
    """Stream ids holding an event of ``type_name`` (e.g. every ConsumerRegistered)."""
    if not storable(type_name):
        return []  # the identifier rule (events/store.py, storable)
    with store.engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT DISTINCT stream_id FROM events WHERE type = :t"), {"t": type_name}
        ).fetchall()
    return sorted(r[0] for r in rows)
