-- What a backend reports doing, for the seed's progress line during a long statement: an
-- index or constraint build (pg_stat_progress_create_index) or an ANALYZE. No row otherwise.
SELECT ci.command, ci.relid::regclass::text AS relation, ci.phase,
       ci.blocks_done, ci.blocks_total, ci.tuples_done, ci.tuples_total
  FROM pg_stat_progress_create_index ci
 WHERE ci.pid = %(pid)s
UNION ALL
SELECT 'ANALYZE', a.relid::regclass::text, a.phase,
       a.sample_blks_scanned, a.sample_blks_total, NULL, NULL
  FROM pg_stat_progress_analyze a
 WHERE a.pid = %(pid)s;
