-- Which server session answers this statement: its process and when it started (a pid alone
-- can be reused; the pair cannot).
SELECT pg_backend_pid(), (SELECT backend_start FROM pg_stat_activity WHERE pid = pg_backend_pid())
