"""The hash chain over stored rows, and canonical JSON.

Each row's hash is SHA-256 over the previous row's hash and the row's canonical bytes,
so editing, deleting or reordering any row breaks the chain at that row. Sealed secrets
are hashed as stored (sealed), so the chain verifies after a sealing key is destroyed.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """Deterministic JSON text: sorted keys, no spaces, UTF-8 kept as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_hash(
    prev_hash: str,
    position: int,
    stream_id: str,
    stream_version: int,
    type_name: str,
    schema_version: int,
    data: str,
    metadata: str,
) -> str:
    """The chained hash of one row (hex). ``data`` and ``metadata`` are the stored text."""
    h = hashlib.sha256(prev_hash.encode("ascii"))
    # A unit separator between fields: no field can shift bytes into its neighbour.
    h.update(
        "\x1f".join(
            (str(position), stream_id, str(stream_version), type_name, str(schema_version),
             data, metadata)
        ).encode("utf-8")
    )
    return h.hexdigest()
