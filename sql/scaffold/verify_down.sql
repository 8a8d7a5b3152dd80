-- Check of down.sql: raises (SQLSTATE RV001) unless the database is back where up.sql
-- found it.
-- TODO(rollout): check what down.sql restores (RAISE ... USING ERRCODE = 'RV001').
SELECT 1;
