-- Tuples the current transaction inserted, updated and deleted, per table, as this backend
-- counts them (pg_stat_get_xact_*: the current transaction's counts, plus any of its own
-- earlier transactions not yet reported; read twice in one transaction, the difference is
-- that transaction's own). The rollout's own schema and the system's are left out.
SELECT format('%I.%I', n.nspname, c.relname) AS table_name,
       pg_stat_get_xact_tuples_inserted(c.oid) AS inserted,
       pg_stat_get_xact_tuples_updated(c.oid) AS updated,
       pg_stat_get_xact_tuples_deleted(c.oid) AS deleted
  FROM pg_class AS c
  JOIN pg_namespace AS n ON n.oid = c.relnamespace
 WHERE c.relkind = 'r'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'rollout')
   AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
