"""The event table, as SQLAlchemy Core metadata (Alembic migrations create it).

One table, written only by INSERT (docs/design.md, "Append only"):
position is assigned by the appender under a lock, so positions are contiguous and
commit order equals position order; ``hash`` chains each row to the one before.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

events_table = sa.Table(
    "events",
    metadata,
    # SQLite: INTEGER PRIMARY KEY is the rowid (fast range scans); PostgreSQL: BIGINT.
    sa.Column(
        "position", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
        autoincrement=False,
    ),
    sa.Column("stream_id", sa.String(255), nullable=False),
    sa.Column("stream_version", sa.Integer, nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("schema_version", sa.SmallInteger, nullable=False),
    sa.Column("data", sa.Text, nullable=False),
    sa.Column("metadata", sa.Text, nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.UniqueConstraint("stream_id", "stream_version", name="uq_events_stream_version"),
)

GENESIS_HASH = "0" * 64
