"""events/chain.py: canonical JSON and the row hash that chains the log."""

from __future__ import annotations

import hashlib
import json

import pytest

from oauthledger.events.chain import canonical_json, row_hash
from oauthledger.events.schema import GENESIS_HASH

ROW = (GENESIS_HASH, 1, "token-a", 1, "AccessTokenRevoked", 1, '{"token":"t"}', '{"time":"x"}')


def test_canonical_json_is_sorted_compact_and_keeps_unicode() -> None:
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": None}]}) == (
        '{"a":[1,{"c":null,"d":2}],"b":1}'
    )
    assert canonical_json({"name": "zoë ✓"}) == '{"name":"zoë ✓"}'


def test_canonical_json_is_independent_of_insertion_order() -> None:
    assert canonical_json({"x": 1, "y": 2}) == canonical_json({"y": 2, "x": 1})
    assert json.loads(canonical_json({"y": 2, "x": 1})) == {"x": 1, "y": 2}


def test_row_hash_is_sha256_over_previous_hash_and_fields() -> None:
    expected = hashlib.sha256(
        (GENESIS_HASH + "\x1f".join(
            ["1", "token-a", "1", "AccessTokenRevoked", "1", '{"token":"t"}', '{"time":"x"}']
        )).encode()
    ).hexdigest()
    assert row_hash(*ROW) == expected
    assert len(expected) == 64


def test_row_hash_is_deterministic() -> None:
    assert row_hash(*ROW) == row_hash(*ROW)


@pytest.mark.parametrize("index", range(len(ROW)))
def test_every_field_changes_the_hash(index: int) -> None:
    changed = list(ROW)
    value = changed[index]
    changed[index] = value + 1 if isinstance(value, int) else value[:-1] + (
        "1" if value[-1] != "1" else "2"
    )
    assert row_hash(*changed) != row_hash(*ROW)


def test_field_boundaries_cannot_shift() -> None:
    # Without a separator, ("ab", "c") and ("a", "bc") would hash alike.
    a = row_hash(GENESIS_HASH, 1, "token-ab", 1, "T", 1, "c", "{}")
    b = row_hash(GENESIS_HASH, 1, "token-a", 1, "T", 1, "bc", "{}")
    assert a != b


def test_json_text_never_contains_the_separator() -> None:
    # RFC 8259 §7: control characters in strings are escaped, so data and metadata can
    # never carry a raw unit separator into the hashed bytes. (The store refuses stream
    # ids with control characters; type names come from the catalog.)
    text = canonical_json({"k\x1f": "v\x1fw"})
    assert "\x1f" not in text
    assert json.loads(text) == {"k\x1f": "v\x1fw"}


def test_chain_links_rows() -> None:
    first = row_hash(*ROW)
    second = row_hash(first, 2, "token-a", 2, "AccessTokenRevoked", 1, "{}", "{}")
    forged = row_hash(GENESIS_HASH, 2, "token-a", 2, "AccessTokenRevoked", 1, "{}", "{}")
    assert second != forged
