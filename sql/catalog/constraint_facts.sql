-- One constraint's definition, deferral and (for an exclusion constraint) its index predicate.
-- Parameters: %(table)s (regclass text), %(name)s.
SELECT pg_get_constraintdef(c.oid) AS definition,
       c.condeferrable AS deferrable,
       c.condeferred AS initially_deferred,
       pg_get_expr(i.indpred, i.indrelid) AS predicate
  FROM pg_constraint c
  LEFT JOIN pg_index i ON i.indexrelid = c.conindid
 WHERE c.conrelid = to_regclass(%(table)s) AND c.conname = %(name)s
