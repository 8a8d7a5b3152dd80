-- Whether %(table)s's constraint %(name)s is still NOT VALID.
SELECT 1 FROM pg_catalog.pg_constraint
 WHERE conrelid = to_regclass(%(table)s) AND conname = %(name)s AND NOT convalidated
