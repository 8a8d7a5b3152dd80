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

REVOKE ALL ON SCHEMA rollout FROM PUBLIC;
REVOKE ALL ON rollout.ledger FROM PUBLIC;
