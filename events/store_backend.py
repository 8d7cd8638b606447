"""What an event store adapter is: the contract between
:class:`oauthledger.events.store.EventStore` (the interface callers use, and everything
every backend shares) and one module per database that fulfils it —
:mod:`oauthledger.events.store_sqlite` and :mod:`oauthledger.events.store_postgres`.

An adapter module imports this one, never ``store.py``: the store imports the adapters
(to pick one by the URL's backend), so the dependency runs one way only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

from sqlalchemy.engine import Connection, Engine

from oauthledger.events.catalog import Event

# One stored row: the columns of ``events`` in order (position, stream_id,
# stream_version, type, schema_version, data, metadata, hash), as RecordedEvent takes them.
Row = tuple[int, str, int, str, int, str, str, str]


class Write(Protocol):
    """One stream's part of an append (``oauthledger.events.store.StreamWrite``)."""

    @property
    def stream_id(self) -> str:
        """The stream written."""

    @property
    def expected_version(self) -> int | None:
        """The version the writer saw; None skips the check."""

    @property
    def events(self) -> Sequence[Event]:
        """The events to append, in order."""


# The store's connection factories: a SQLAlchemy connection, a pooled DBAPI connection
# (both raise StoreUnavailable when the database cannot be reached).
ConnectFn = Callable[[], Connection]
RawConnectFn = Callable[[], Any]
# Translates a unique violation that slipped past the version check into the store
# error (EventStore._conflict_from: the same for every backend).
ConflictFrom = Callable[[Sequence[Write], Exception], Exception]


class StoreAdapter(Protocol):
    """One backend of the event store: one per store, built by it."""

    #: True for SQLite: callers that run raw SQL pick placeholders and cursors by it.
    is_sqlite: ClassVar[bool]
    #: The DBAPI placeholder of the backend's driver, for raw SQL.
    param: ClassVar[str]

    def __init__(self, url: str, connect: ConnectFn, raw_connection: RawConnectFn,
                 conflict_from: ConflictFrom) -> None:
        """``url``: the database URL, safe to print; the store's connection factories
        and its conflict translation (the same for every backend)."""

    @staticmethod
    def create_engine(url: str) -> Engine:
        """An engine configured for the backend's locking rules. Connects lazily."""

    def append(self, writes: Sequence[Write], meta_text: str) -> list[Row]:
        """Store ``writes`` (at least one event or version check; stream ids already
        checked) with the metadata text ``meta_text``, serialized against every other
        append: check each expected version (a stream named twice continues from its
        new version), chain (:func:`oauthledger.events.chain.row_hash`) and insert the
        rows, all or nothing. Returns the stored rows. Raises ConcurrencyConflict,
        StoreUnavailable or EventStoreError."""

    def end_read(self, raw: Any) -> None:
        """Called after a read on a raw DBAPI connection, before it goes back to the
        pool."""


def first_line(exc: BaseException) -> str:
    """The first line of a (database) error's message, for one-line store errors."""
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__
