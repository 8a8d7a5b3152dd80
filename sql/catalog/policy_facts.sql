-- A table's row-level security and one of its policies (NULL columns when it is missing).
-- Parameters: %(table)s (regclass text), %(policy)s.
SELECT c.relrowsecurity AS rls_enabled,
       p.polname IS NOT NULL AS policy_present,
       coalesce(ARRAY(SELECT rolname FROM pg_roles WHERE oid = ANY (p.polroles) ORDER BY 1), '{}') AS roles,
       pg_get_expr(p.polqual, p.polrelid) AS using_expression,
       pg_get_expr(p.polwithcheck, p.polrelid) AS check_expression
  FROM pg_class c
  LEFT JOIN pg_policy p ON p.polrelid = c.oid AND p.polname = %(policy)s
 WHERE c.oid = to_regclass(%(table)s)
