-- What a server session ran last (or runs now), seen from another session of the same role.
SELECT query FROM pg_stat_activity WHERE pid = %(pid)s AND backend_start = %(started)s
