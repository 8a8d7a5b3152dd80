-- down of supabase/migrations/{file}: undoes up.sql, in one transaction.
BEGIN;

-- TODO(rollout): write the down. Undo what up.sql does; where data would stop the down,
-- refuse (RAISE EXCEPTION ... USING ERRCODE = 'RB001', HINT = 'what to do') rather than
-- delete or edit anything.

COMMIT;
