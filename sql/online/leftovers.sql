-- What an earlier online apply on this database left behind (it was killed, or lost its
-- connection): one row per object, (kind, name). Read-only.
SELECT 'trigger' AS kind, format('%%I on %%s', t.tgname, t.tgrelid::regclass) AS name
  FROM pg_catalog.pg_trigger t WHERE t.tgname ~ '^rollout_online_capture_'
UNION ALL
SELECT 'table', c.oid::regclass::text
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r' AND (n.nspname IN ('rollout_shadow', 'rollout_retired')
                            OR (n.nspname = 'rollout' AND c.relname = 'online_log'))
UNION ALL
SELECT 'function', p.oid::regprocedure::text
  FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'rollout' AND p.proname IN ('online_capture', 'online_refuse_truncate')
UNION ALL
SELECT 'schema', n.nspname::text
  FROM pg_catalog.pg_namespace n WHERE n.nspname IN ('rollout_shadow', 'rollout_retired')
ORDER BY 1, 2
