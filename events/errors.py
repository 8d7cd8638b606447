"""Errors raised by the event core. Each carries enough to print one clear line."""

from __future__ import annotations


class EventStoreError(Exception):
    """Base class for store failures."""


class ConcurrencyConflict(EventStoreError):
    """The stream moved on since the writer read it (optimistic concurrency)."""

    def __init__(self, stream_id: str, expected: int | None, actual: int) -> None:
        super().__init__(
            f"stream {stream_id!r} is at version {actual}, the writer expected {expected}"
        )
        self.stream_id = stream_id
        self.expected = expected
        self.actual = actual


class StoreUnavailable(EventStoreError):
    """The database cannot be reached; ``url`` is safe to print (no password)."""

    def __init__(self, url: str, cause: str) -> None:
        super().__init__(f"event store at {url} is unavailable: {cause}")
        self.url = url


class CorruptEvent(EventStoreError):
    """A stored row cannot be decoded (bad JSON, unknown type, bad schema version)."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"event at position {position} is corrupt: {reason}")
        self.position = position
        self.reason = reason


class SealingError(Exception):
    """A sealed value cannot be opened (unknown key id, tampered bytes, bad format)."""
