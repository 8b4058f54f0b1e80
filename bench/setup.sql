-- Objects the benchmark uses (loaded by bench/run.sh into a fresh database).
CREATE EXTENSION jobq;
CREATE SCHEMA bench;

-- the no-op handler of the burn-down: an empty SQL function
CREATE FUNCTION bench.noop(payload jsonb) RETURNS void LANGUAGE sql AS $$ $$;

-- latency: records when the handler started
CREATE TABLE bench.stamps (n int, started timestamptz);
CREATE FUNCTION bench.stamp(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bench.stamps VALUES ((payload->>'n')::int, clock_timestamp())
$$;

-- latency of effects: the handler's write, stamped when it returns; its
-- commit time comes from track_commit_timestamp
CREATE TABLE bench.effects (n int, returned timestamptz);
CREATE FUNCTION bench.effect(payload jsonb) RETURNS void LANGUAGE sql AS $$
    INSERT INTO bench.effects VALUES ((payload->>'n')::int, clock_timestamp())
$$;

-- baselines: a table shaped like jobq.jobs for plain INSERTs, and one to
-- DELETE from by primary key
CREATE TABLE bench.plain (LIKE jobq.jobs INCLUDING DEFAULTS INCLUDING INDEXES);
CREATE TABLE bench.del (id bigint PRIMARY KEY, queue text, payload jsonb);
CREATE SEQUENCE bench.del1_seq;
CREATE SEQUENCE bench.del100_seq;
