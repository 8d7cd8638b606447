"""PostgreSQL: the append as one server-side function (lock, head, versions, chain, insert).

Revision ID: 0002
Revises: 0001

Why a function: an append computed by the client needs the head row before it can hash
the new rows, so it costs two round trips inside one transaction (lock + head, then
INSERT + COMMIT). ``oauthledger_append`` does the same steps inside the server, so an
append is one autocommit call: one round trip and one commit. The hash definition is
the one of ``oauthledger.events.chain.row_hash``; ``EventStore.verify`` recomputes every row's hash
in Python, and tests/integration/test_store_chain_pg.py checks both agree on awkward
text (non-ASCII, separators, quotes). SQLite keeps the client-side append (in-process,
no round trips to save).
"""

from __future__ import annotations

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# The writes of one append_many call arrive as parallel arrays: one entry per write in
# p_streams / p_expected / p_counts, and one entry per event (all writes' events in
# order) in p_types / p_schemas / p_data. Returns the stored rows' position, stream
# version and hash, in order.
APPEND_FUNCTION = r"""
CREATE OR REPLACE FUNCTION oauthledger_append(
    p_streams text[], p_expected integer[], p_counts integer[],
    p_types text[], p_schemas smallint[], p_data text[], p_metadata text,
    p_lock_class integer
) RETURNS TABLE (out_position bigint, out_version integer, out_hash text)
LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    v_position bigint;
    v_hash text;
    v_ids text[];
    v_versions integer[];
    v_slot integer;
    v_version integer;
    v_event integer := 0;
    r_position bigint[] := '{}';
    r_stream text[] := '{}';
    r_version integer[] := '{}';
    r_hash text[] := '{}';
BEGIN
    -- Commit order = position order rests on reading the head AFTER the lock with a
    -- fresh snapshot, which only READ COMMITTED gives each statement of a VOLATILE
    -- function. Under REPEATABLE READ the head would be stale: refuse loudly.
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION 'oauthledger_append needs READ COMMITTED isolation, not %',
            current_setting('transaction_isolation');
    END IF;
    -- docs/design.md, "Commit order is position order": appends are serialized until commit. Keys:
    -- oauthledger.events.store_postgres.APPEND_LOCK_CLASS (p_lock_class) and the events
    -- table's OID.
    PERFORM pg_advisory_xact_lock(p_lock_class, 'events'::regclass::oid::int4);
    SELECT e.position, e.hash INTO v_position, v_hash
        FROM events e ORDER BY e.position DESC LIMIT 1;
    IF NOT FOUND THEN
        v_position := 0;
        v_hash := repeat('0', 64);  -- events.schema.GENESIS_HASH
    END IF;
    v_ids := '{}';
    v_versions := '{}';
    FOR w IN 1 .. COALESCE(array_length(p_streams, 1), 0) LOOP
        v_slot := array_position(v_ids, p_streams[w]);
        IF v_slot IS NULL THEN
            -- Each stream's current version, read once per call. One simple statement
            -- per stream keeps a cached generic plan (an index probe); a set-based
            -- query over unnest(p_streams) was re-planned on every call (~190 us).
            -- ORDER BY .. DESC LIMIT 1, not MAX(): the generic plan for MAX() may scan
            -- the stream's whole index range, which made appends to a long stream
            -- slower with every event.
            SELECT e.stream_version INTO v_version
                FROM events e WHERE e.stream_id = p_streams[w]
                ORDER BY e.stream_version DESC LIMIT 1;
            IF NOT FOUND THEN
                v_version := 0;
            END IF;
            v_ids := array_append(v_ids, p_streams[w]);
            v_versions := array_append(v_versions, v_version);
            v_slot := array_length(v_ids, 1);
        END IF;
        v_version := v_versions[v_slot];
        -- Optimistic concurrency: SQLSTATE OL409 carries [stream, expected, actual].
        IF p_expected[w] IS NOT NULL AND p_expected[w] <> v_version THEN
            RAISE EXCEPTION 'stream % is at version %, the writer expected %',
                    p_streams[w], v_version, p_expected[w]
                USING ERRCODE = 'OL409',
                      DETAIL = json_build_array(p_streams[w], p_expected[w], v_version)::text;
        END IF;
        FOR i IN 1 .. p_counts[w] LOOP
            v_event := v_event + 1;
            v_position := v_position + 1;
            v_version := v_version + 1;
            -- events.chain.row_hash: SHA-256 over the previous hash and the fields
            -- joined by U+001F, as UTF-8.
            v_hash := encode(sha256(convert_to(v_hash || concat_ws(chr(31),
                          v_position, p_streams[w], v_version, p_types[v_event],
                          p_schemas[v_event], p_data[v_event], p_metadata), 'UTF8')), 'hex');
            r_position := array_append(r_position, v_position);
            r_stream := array_append(r_stream, p_streams[w]);
            r_version := array_append(r_version, v_version);
            r_hash := array_append(r_hash, v_hash);
        END LOOP;
        -- A stream named twice in one call continues from its new version.
        v_versions[v_slot] := v_version;
    END LOOP;
    IF v_event <> COALESCE(array_length(p_types, 1), 0) THEN
        RAISE EXCEPTION 'oauthledger_append: % events announced, % given',
            v_event, COALESCE(array_length(p_types, 1), 0);
    END IF;
    IF v_event > 0 THEN
        INSERT INTO events (position, stream_id, stream_version, type, schema_version,
                            data, metadata, hash)
            SELECT u.p, u.s, u.v, u.t, u.sc, u.d, p_metadata, u.h
              FROM unnest(r_position, r_stream, r_version, p_types, p_schemas, p_data,
                          r_hash) AS u(p, s, v, t, sc, d, h);
    END IF;
    RETURN QUERY SELECT * FROM unnest(r_position, r_version, r_hash);
END
$fn$;
"""

APPEND_SIGNATURE = (
    "oauthledger_append(text[], integer[], integer[], text[], smallint[], text[], text, "
    "integer)"
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_FUNCTION)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP FUNCTION IF EXISTS {APPEND_SIGNATURE}")
