-- The control: pure CPU in the server (no table, no buffers, no locks, one row back), timed
-- back to back with each probe so that the probe's time can be read against the machine's
-- speed at that moment. Its parameter `rows` sets its cost; the baseline matches it to each
-- probe's. generate_series in the select list streams its rows (in FROM it would store them).
SELECT count(*) FROM (SELECT generate_series(1, %(rows)s::bigint)) AS s
