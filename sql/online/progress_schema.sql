-- The online apply's own ledger: one row per phase of each online operation (rollout.online),
-- written as the phase starts and updated as it ends, each in its own transaction, so a
-- killed run leaves behind where it stopped. The change itself is recorded in rollout.ledger,
-- in the swap's own transaction, like any apply.
CREATE TABLE IF NOT EXISTS rollout.online_phase (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    operation     uuid NOT NULL,
    version       text NOT NULL,
    direction     text NOT NULL CHECK (direction IN ('up', 'down')),
    table_name    text NOT NULL,
    phase         text NOT NULL,
    status        text NOT NULL CHECK (status IN ('started', 'done', 'failed')),
    started_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    finished_at   timestamptz,
    detail        jsonb
);
CREATE INDEX IF NOT EXISTS online_phase_operation_idx ON rollout.online_phase (operation, id);
REVOKE ALL ON rollout.online_phase FROM PUBLIC;
