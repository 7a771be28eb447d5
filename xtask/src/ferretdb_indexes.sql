-- Indexes FerretDB 1.x cannot make itself, installed by `cargo xtask stack up` into the native stack's PostgreSQL.
--
-- FerretDB stores a collection as a table with one jsonb column, `_jsonb`, and pushes an equality filter down as
-- `_jsonb->'field' @> '"value"'` (in finds, `_jsonb->$1 @> $2`). The btree indexes it creates for
-- `createIndexes` cannot serve `@>`, so every lookup by `eventId` or `_id` scanned the whole table: 0.6-0.9 s per
-- lookup at 10,000 events under load (docs/BENCHMARKS.md). A GIN index with jsonb_path_ops on the same expression
-- serves it. Together with `plan_cache_mode=force_custom_plan` on the server (a generic plan for `_jsonb->$1`
-- cannot match an index on `_jsonb->'eventId'`), a lookup by eventId at 30,000 events went from 8 ms to 0.6 ms.
--
-- `fastupdate = off`: Herald looks an event up right after inserting it, and a pending list would be scanned
-- linearly until it is merged.
--
-- The tables of `events` collections (FerretDB names a table after its collection: `events_<hash>`) also get one
-- per list filter of herald-query (`userId`, `status`, `eventType`, `channel`, `priority`), the equalities FerretDB
-- pushes down for `GET /api/logs` and `GET /api/dead-letters`. FerretDB 1.24 pushes down neither ranges, sorts nor
-- limits (a filtered find fetches every row the equalities match and sorts them in Go), so these turn a list's
-- cost from the size of the table into the number of events its filter matches. PostgreSQL combines two of them
-- (BitmapAnd) for `userId` + `status`. Other tables do not pay for them on every write.
--
-- `createdHour` and `createdDay` (the UTC hour and day of `createdAt`, which every event stores) bound a list to
-- a slice of time by equality: herald-query reads a page one slice at a time (`crates/query/src/logs/slices.rs`),
-- so PostgreSQL ANDs the filter's index with the slice's and FerretDB sorts one hour's matches, not all of them.
-- `createdSlot` (the ten minutes of `createdAt`) has no index: a list asks for it together with `createdHour`,
-- and PostgreSQL drops the hour's other rows before FerretDB fetches them.
--
-- An event trigger adds the indexes to every table FerretDB creates from now on; the DO block adds them to the
-- tables that already exist. Neither may ever fail FerretDB's own statement: problems become warnings.

CREATE OR REPLACE FUNCTION herald_index_ferretdb_table(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := (SELECT relname FROM pg_class WHERE oid = target);
    field text;
BEGIN
    IF name LIKE '\_ferretdb%' OR NOT EXISTS (
        SELECT 1 FROM pg_attribute WHERE attrelid = target AND attname = '_jsonb' AND NOT attisdropped
    ) THEN
        RETURN;
    END IF;
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb->''eventId'') jsonb_path_ops) WITH (fastupdate = off)',
                   left(name, 40) || '_herald_event_id', target);
    EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb->''_id'') jsonb_path_ops) WITH (fastupdate = off)',
                   left(name, 40) || '_herald_id', target);
    IF name ~ '^events_[0-9a-f]{8}$' THEN
        FOREACH field IN ARRAY ARRAY['userId', 'status', 'eventType', 'channel', 'priority', 'createdHour', 'createdDay'] LOOP
            EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON %s USING gin ((_jsonb->%L) jsonb_path_ops) WITH (fastupdate = off)',
                           left(name, 40) || '_herald_' || lower(field), target, field);
        END LOOP;
    END IF;
EXCEPTION WHEN others THEN
    RAISE WARNING 'herald: indexing % failed: %', target, SQLERRM;
END $$;

-- Events stored before `createdHour`/`createdDay`/`createdSlot` existed get them here, from `createdAt`, in FerretDB's own
-- layout: each document carries its schema under `$s` (`p`: the type of each field, `$k`: the field order), and
-- a date is its milliseconds since the epoch. Without the fields herald-query's slice walk would not list them.
-- Only rows that lack the fields are touched, so a second run reads but writes nothing.
CREATE OR REPLACE FUNCTION herald_slice_ferretdb_events(target regclass) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    name text := (SELECT relname FROM pg_class WHERE oid = target);
BEGIN
    IF name !~ '^events_[0-9a-f]{8}$' THEN
        RETURN;
    END IF;
    -- Rows with none of the fields get all three.
    EXECUTE format($update$
        UPDATE %s SET _jsonb = jsonb_set(jsonb_set(
                _jsonb || jsonb_build_object(
                    'createdDay', to_char(created, 'YYYY-MM-DD'),
                    'createdHour', to_char(created, 'YYYY-MM-DD"T"HH24'),
                    'createdSlot', to_char(created, 'YYYY-MM-DD"T"HH24:') || (extract(minute FROM created)::int / 10)),
                '{$s,p}', (_jsonb->'$s'->'p')
                    || '{"createdDay": {"t": "string"}, "createdHour": {"t": "string"}, "createdSlot": {"t": "string"}}'),
            '{$s,$k}', (_jsonb->'$s'->'$k') || '["createdDay", "createdHour", "createdSlot"]')
        FROM (SELECT ctid AS row_id,
                     to_timestamp((_jsonb->>'createdAt')::bigint / 1000.0) AT TIME ZONE 'UTC' AS created
              FROM %s
              WHERE NOT _jsonb ? 'createdDay' AND jsonb_typeof(_jsonb->'createdAt') = 'number') AS old
        WHERE ctid = old.row_id
    $update$, target, target);
    -- Rows stored with the day and hour but before `createdSlot` existed get the slot.
    EXECUTE format($update$
        UPDATE %s SET _jsonb = jsonb_set(jsonb_set(
                _jsonb || jsonb_build_object(
                    'createdSlot', to_char(created, 'YYYY-MM-DD"T"HH24:') || (extract(minute FROM created)::int / 10)),
                '{$s,p}', (_jsonb->'$s'->'p') || '{"createdSlot": {"t": "string"}}'),
            '{$s,$k}', (_jsonb->'$s'->'$k') || '["createdSlot"]')
        FROM (SELECT ctid AS row_id,
                     to_timestamp((_jsonb->>'createdAt')::bigint / 1000.0) AT TIME ZONE 'UTC' AS created
              FROM %s
              WHERE _jsonb ? 'createdDay' AND NOT _jsonb ? 'createdSlot'
                AND jsonb_typeof(_jsonb->'createdAt') = 'number') AS old
        WHERE ctid = old.row_id
    $update$, target, target);
EXCEPTION WHEN others THEN
    RAISE WARNING 'herald: adding createdDay/createdHour/createdSlot to % failed: %', target, SQLERRM;
END $$;

CREATE OR REPLACE FUNCTION herald_index_new_ferretdb_tables() RETURNS event_trigger
LANGUAGE plpgsql AS $$
DECLARE
    created record;
BEGIN
    FOR created IN
        SELECT objid FROM pg_event_trigger_ddl_commands()
        WHERE command_tag = 'CREATE TABLE' AND object_type = 'table'
    LOOP
        PERFORM herald_index_ferretdb_table(created.objid::regclass);
    END LOOP;
END $$;

DROP EVENT TRIGGER IF EXISTS herald_index_new_ferretdb_tables;
CREATE EVENT TRIGGER herald_index_new_ferretdb_tables ON ddl_command_end WHEN TAG IN ('CREATE TABLE')
    EXECUTE FUNCTION herald_index_new_ferretdb_tables();

DO $$
DECLARE
    existing record;
BEGIN
    FOR existing IN
        SELECT c.oid FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'public')
    LOOP
        PERFORM herald_index_ferretdb_table(existing.oid::regclass);
        PERFORM herald_slice_ferretdb_events(existing.oid::regclass);
    END LOOP;
END $$;
