-- The change log of an online apply: the primary keys of the rows each committed statement
-- on {live} inserted, updated or deleted (no row images: the catch-up copies each logged row
-- as the live table has it then, so only committed, final states reach the copy, never the
-- states an INITIALLY DEFERRED constraint lets a transaction pass through).
CREATE TABLE {log} AS SELECT {key} FROM ONLY {live} WITH NO DATA;
ALTER TABLE {log} SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);

-- Runs as its owner (the rollout), so the application's roles need no privilege on the log.
CREATE FUNCTION {capture}() RETURNS trigger
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
AS $capture$
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        INSERT INTO {log} SELECT {key} FROM rollout_new;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO {log} SELECT {key} FROM rollout_old;
    END IF;
    RETURN NULL;
END
$capture$;
REVOKE ALL ON FUNCTION {capture}() FROM PUBLIC;

CREATE FUNCTION {refuse_truncate}() RETURNS trigger
    LANGUAGE plpgsql
AS $refuse$
BEGIN
    RAISE EXCEPTION 'TRUNCATE of % is refused while the rollout rebuilds it online', TG_TABLE_NAME
        USING ERRCODE = '55000',
              HINT = 'wait for the online apply to end, or stop it (its rerun or rollout.online.cleanup removes this trigger)';
END
$refuse$;
REVOKE ALL ON FUNCTION {refuse_truncate}() FROM PUBLIC;
