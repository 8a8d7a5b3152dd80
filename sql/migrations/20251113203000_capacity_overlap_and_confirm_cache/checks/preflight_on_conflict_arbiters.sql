-- these functions use allocations_no_overlap as an ON CONFLICT arbiter; a deferrable constraint cannot be one, so they would fail once the migration lands: change them first
-- (A preflight check of this bundle, named in its manifest.toml: each row is a problem, its
-- first column names it, and the first comment line above is the message.)
SELECT p.oid::regprocedure::text AS function
  FROM pg_proc AS p
  JOIN pg_namespace AS n ON n.oid = p.pronamespace
 WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
   AND p.prosrc ~* 'on\s+conflict\s+on\s+constraint\s+"?allocations_no_overlap'
 ORDER BY 1
