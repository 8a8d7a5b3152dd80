-- The server's own counters for the probes' queries (by query id, so they include the
-- application's calls of the same query), in this database. Read twice, around a
-- measurement; the difference is what those queries cost the server meanwhile.
SELECT s.queryid,
       sum(s.calls)::bigint AS calls,
       sum(s.total_exec_time) AS total_exec_ms
  FROM {schema}.pg_stat_statements AS s
 WHERE s.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
   AND s.queryid = ANY(%(query_ids)s)
 GROUP BY s.queryid
