-- Parameter sets for the probes: real (non-shadow) table allocations picked in a stable
-- pseudo-random order, each with its restaurant, its window, the window's day and a hold of
-- the same restaurant (NULL when it has none). The baseline stores these rows and the monitor
-- replays the same ones, so before and after time the same work.
SELECT a.restaurant_id::text                          AS restaurant_id,
       a.resource_id::text                            AS resource_id,
       lower(a."window")                              AS window_start,
       upper(a."window")                              AS window_end,
       date_trunc('day', lower(a."window"))           AS day_start,
       date_trunc('day', lower(a."window")) + interval '1 day' AS day_end,
       coalesce(b.party_size, 2)                      AS party_size,
       (SELECT h.id::text FROM public.table_holds AS h
         WHERE h.restaurant_id = a.restaurant_id
         ORDER BY md5(h.id::text) LIMIT 1)            AS hold_id
  FROM public.allocations AS a
  LEFT JOIN public.bookings AS b ON b.id = a.booking_id
 WHERE a.resource_type = 'table' AND NOT a.shadow
 ORDER BY md5(a.id::text)
 LIMIT %(samples)s
