-- ficus's own objects for the change-data adapter, in schema `_ficus` (never in the monolith's
-- `public`). Applied by the adapter at start (`ficus_adapters::migrations`), tracked in
-- `_ficus.schema_migrations`, not in sqlx's `_sqlx_migrations` (the monolith's migrator owns
-- that name in `public`). Every statement is idempotent as well.

-- Written by the adapter every `heartbeat.interval_ms`: the write goes through the slot, so an
-- idle or filtered database still moves the slot forward (WAL does not pile up), and the
-- heartbeat's commit time measures the end-to-end lag.
CREATE TABLE IF NOT EXISTS _ficus.heartbeat (
    slot_name text        PRIMARY KEY,
    beat_at   timestamptz NOT NULL DEFAULT now(),
    beats     bigint      NOT NULL DEFAULT 0
);

-- One row per slot once an initial snapshot has been decided on.
CREATE TABLE IF NOT EXISTS _ficus.snapshots (
    slot_name    text        PRIMARY KEY,
    started_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);

-- Snapshot progress, per table and segment. A segment is the part of a table read at one
-- exported snapshot (`snapshot_lsn`); a crash and restart starts a new segment after the last
-- finished chunk (`last_key`, the primary key of its last row, as PostgreSQL text values).
-- `inflight_key` is the last key of the chunk being sent (set before sending, cleared once the
-- broker acknowledged it): after a crash, that chunk's rows may be in the topic, so its keys
-- stay with this segment's LSN in the stream filter although the next segment reads them again.
-- Changes streamed with a commit LSN below a key's segment LSN are already in the snapshot and
-- are skipped; that is what keeps the snapshot consistent with the stream.
CREATE TABLE IF NOT EXISTS _ficus.snapshot_progress (
    slot_name     text        NOT NULL,
    table_schema  text        NOT NULL,
    table_name    text        NOT NULL,
    segment       integer     NOT NULL,
    snapshot_lsn  pg_lsn      NOT NULL,
    last_key      text[],
    inflight_key  text[],
    rows_done     bigint      NOT NULL DEFAULT 0,
    rows_estimate bigint      NOT NULL DEFAULT 0,
    done          boolean     NOT NULL DEFAULT false,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slot_name, table_schema, table_name, segment)
);

-- A ready-made transactional outbox (declare it in `[[outbox]]` to route it). Applications
-- insert into it in the same transaction as their state change; the adapter sends each
-- inserted row to the topic `<outbox.topic_prefix><aggregatetype>`, keyed by `aggregateid`,
-- with `payload` as the value and `id` and `type` as headers. Rows may be deleted right after
-- the insert (in the same transaction): the insert is in the WAL all the same.
CREATE TABLE IF NOT EXISTS _ficus.outbox (
    id            uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    aggregatetype text        NOT NULL,
    aggregateid   text        NOT NULL,
    type          text        NOT NULL,
    payload       jsonb,
    created_at    timestamptz NOT NULL DEFAULT now()
);
