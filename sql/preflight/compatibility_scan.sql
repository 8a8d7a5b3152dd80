-- Functions whose body names allocations_no_overlap in an ON CONFLICT clause: a deferrable
-- constraint cannot be an ON CONFLICT arbiter, so they would fail once the migration lands.
SELECT p.oid::regprocedure::text AS function
  FROM pg_proc AS p
  JOIN pg_namespace AS n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND p.prosrc ~* 'on\s+conflict\s+on\s+constraint\s+"?allocations_no_overlap'
 ORDER BY 1
