-- Check of up.sql: raises (SQLSTATE RV001) naming the first thing that is not as the up
-- leaves it.
-- TODO(rollout): check what up.sql creates or changes (catalog queries; RAISE ... USING
-- ERRCODE = 'RV001').
SELECT 1;
