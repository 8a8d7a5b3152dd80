-- The rollout ledger: one row per step the rollout took on this database. The row of a
-- successful apply or rollback is written in the same transaction as the change itself, so
-- the ledger never claims a change that did not commit. Failures get their own row after.
CREATE SCHEMA IF NOT EXISTS rollout;

CREATE TABLE IF NOT EXISTS rollout.ledger (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    version       text NOT NULL,
    checksum      text NOT NULL,
    direction     text NOT NULL CHECK (direction IN ('up', 'down')),
    outcome       text NOT NULL CHECK (outcome IN ('applied', 'rolled_back', 'failed', 'refused')),
    run_id        text,
    actor         text,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
    duration_s    numeric(12, 3),
    lock_s        numeric(12, 3),
    detail        text
);
-- Added after the first release: ledgers made before gain them here.
-- row_effects: what the script did to existing rows, counted in its own transaction.
-- session: which process committed it (host, pid, Airflow task and try), so a task that
-- outlived its worker can be recognised.
ALTER TABLE rollout.ledger
    ADD COLUMN IF NOT EXISTS row_effects jsonb,
    ADD COLUMN IF NOT EXISTS session jsonb;

-- The lease: one rollout run at a time on this database, across DAGs and the CLI, for the
-- whole run (taken at preflight, released by the run's report). One row or none.
CREATE TABLE IF NOT EXISTS rollout.lease (
    held          boolean PRIMARY KEY DEFAULT true CHECK (held),
    run_id        text NOT NULL,
    dag_id        text,
    target        text,
    actor         text,
    taken_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);

REVOKE ALL ON SCHEMA rollout FROM PUBLIC;
REVOKE ALL ON rollout.ledger FROM PUBLIC;
REVOKE ALL ON rollout.lease FROM PUBLIC;
