"""Upcasters: turn an event stored under an old schema version into the current shape.

Stored rows are never rewritten (the log is append-only and hash-chained); instead each
schema change registers a function here that maps version N's ``data`` to version N+1.
:func:`decode` applies the chain on every read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from oauthledger.events.catalog import EVENT_TYPES, Event

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]

# (type name, from version) -> function producing the data of version + 1
UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownEventType(ValueError):
    """The stored type name is not in the catalog."""


class UnsupportedSchemaVersion(ValueError):
    """The stored schema version is newer than this code, or has no upcaster."""


def upcaster(type_name: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register ``fn`` as the step from ``from_version`` to ``from_version + 1``."""

    def register(fn: Upcaster) -> Upcaster:
        UPCASTERS[(type_name, from_version)] = fn
        return fn

    return register


@upcaster("ConsumerRegistered", 1)
def _consumer_registered_v1(data: dict[str, Any]) -> dict[str, Any]:
    # Schema 1 followed Atlassian, which accepts exactly one method (RSA-SHA1) per
    # consumer; schema 2 holds the list of methods the consumer may sign with.
    out = dict(data)
    method = out.pop("signature_method", None) or "RSA-SHA1"
    out["signature_methods"] = [method]
    return out


def upcast(type_name: str, schema_version: int, data: dict[str, Any]) -> dict[str, Any]:
    """Return ``data`` in the current schema of ``type_name``."""
    cls = EVENT_TYPES.get(type_name)
    if cls is None:
        raise UnknownEventType(f"unknown event type {type_name!r}")
    current = cls.SCHEMA_VERSION
    if schema_version > current:
        raise UnsupportedSchemaVersion(
            f"{type_name} schema {schema_version} is newer than this code (knows {current})"
        )
    version = schema_version
    while version < current:
        step = UPCASTERS.get((type_name, version))
        if step is None:
            raise UnsupportedSchemaVersion(f"no upcaster for {type_name} from schema {version}")
        data = step(data)
        version += 1
    return data


def decode(type_name: str, schema_version: int, data: dict[str, Any]) -> Event:
    """Build the current event object from a stored row's type, schema and data."""
    data = upcast(type_name, schema_version, data)
    cls = EVENT_TYPES[type_name]
    try:
        kwargs = {
            k: tuple(v) if isinstance(v, list) else v for k, v in data.items()
        }
        return cls(**kwargs)
    except TypeError as exc:
        raise UnsupportedSchemaVersion(f"{type_name} data does not fit its schema: {exc}") from None
