-- Which server session answers this statement: its process and when it started (a pid alone
-- can be reused; the pair cannot). The token makes this statement's text its own, to be
-- recognised in pg_stat_activity.query (a parameter would not appear there).
SELECT pg_backend_pid(),
       (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid()),
       {token}::text AS token
