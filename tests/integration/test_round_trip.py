"""The hot path's one round trip (events/round_trip.py) on the real Redis: the same replies
as redis-py's pipeline, an error reply raised and its connection dropped, a connection
the server closed replaced without the caller noticing, a Redis that is gone reported as
redis-py reports it; the embedded default's fakeredis takes the pipeline."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from oauthledger.events.keys import KeyLayout
from oauthledger.events.round_trip import RoundTrip
from tests.conftest import REDIS_URL
from tests.support import true_in_a_forked_child


def _batch(layout: KeyLayout) -> tuple[tuple[object, ...], ...]:
    nonce = layout.nonce("ck", "tk", "1700000000", "n1")
    return (("SET", nonce, "1", "EX", 60, "NX"),
            ("MGET", f"{layout.prefix}:a", f"{layout.prefix}:missing", f"{layout.prefix}:b"))


def test_replies_are_redis_pys(redis_client: redis.Redis, key_layout: KeyLayout) -> None:
    redis_client.set(f"{key_layout.prefix}:a", b"\x00bin|\xff")
    redis_client.set(f"{key_layout.prefix}:b", "2")
    trip = RoundTrip(redis_client)
    first = trip.run(_batch(key_layout))
    again = trip.run(_batch(key_layout))
    assert first == [b"OK", [b"\x00bin|\xff", None, b"2"]]
    assert again == [None, [b"\x00bin|\xff", None, b"2"]]  # NX: the nonce is taken
    pipe = redis_client.pipeline(transaction=False)
    pipe.execute_command(*_batch(key_layout)[1])
    assert pipe.execute() == [first[1]]
    assert redis_client.ttl(key_layout.nonce("ck", "tk", "1700000000", "n1")) in range(55, 61)


def test_an_error_reply_raises_and_the_connection_is_not_reused(
        redis_client: redis.Redis, key_layout: KeyLayout) -> None:
    trip = RoundTrip(redis_client)
    key = f"{key_layout.prefix}:list"
    redis_client.rpush(key, "x")
    with pytest.raises(redis.ResponseError):
        # GET on a list: WRONGTYPE; the MGET's reply behind it stays unread.
        trip.run((("GET", key), ("MGET", key)))
    assert trip._idle == []  # dropped, not put back with a reply pending
    assert trip.run((("MGET", key),)) == [[None]]  # MGET of a list key answers nil


def test_a_connection_the_server_closed_is_replaced(
        redis_client: redis.Redis, key_layout: KeyLayout) -> None:
    redis_client.set(f"{key_layout.prefix}:a", "1")
    trip = RoundTrip(redis_client)
    assert trip.run((("MGET", f"{key_layout.prefix}:a"),)) == [[b"1"]]
    (conn,) = trip._idle
    conn.send_command("CLIENT", "ID")
    client_id = conn.read_response()
    redis_client.client_kill_filter(_id=client_id)
    # The idle connection is dead; the batch is sent again on a new one.
    assert trip.run((("MGET", f"{key_layout.prefix}:a"),)) == [[b"1"]]
    assert len(trip._idle) == 1 and trip._idle[0] is not conn
    trip.close()


def test_a_forked_process_never_uses_its_parents_connections(
        redis_client: redis.Redis, key_layout: KeyLayout) -> None:
    # gunicorn forks its workers after the app (and so a RoundTrip) may have been used:
    # a socket shared by two processes would interleave their replies.
    redis_client.set(f"{key_layout.prefix}:a", "1")
    trip = RoundTrip(redis_client)
    assert trip.run((("MGET", f"{key_layout.prefix}:a"),)) == [[b"1"]]
    (parent_conn,) = trip._idle

    def child_uses_its_own() -> bool:
        replies = trip.run((("MGET", f"{key_layout.prefix}:a"),))
        return replies == [[b"1"]] and trip._idle[0] is not parent_conn

    assert true_in_a_forked_child(child_uses_its_own)
    # The parent's own connection is still its own.
    assert trip.run((("MGET", f"{key_layout.prefix}:a"),)) == [[b"1"]]
    assert trip._idle == [parent_conn]
    trip.close()


def test_redis_gone_raises_connection_error() -> None:
    client = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    with pytest.raises(redis.ConnectionError):
        RoundTrip(client).run((("MGET", "x"),))


def test_fakeredis_takes_the_pipeline() -> None:
    client = fakeredis.FakeRedis()
    client.set("ol:a", "1")
    trip = RoundTrip(client)
    assert trip._pool is None
    replies = trip.run((("SET", "ol:n", "1", "EX", 60, "NX"), ("MGET", "ol:a", "ol:b")))
    assert bool(replies[0]) and replies[1] == [b"1", None]
    assert not trip.run((("SET", "ol:n", "1", "EX", 60, "NX"),))[0]


def test_the_test_server_is_the_configured_one() -> None:
    # The fast path needs a plain redis-py pool, as production clients have.
    assert type(redis.Redis.from_url(REDIS_URL).connection_pool) is redis.ConnectionPool
