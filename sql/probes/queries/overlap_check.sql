-- Overlap check: the confirmed allocations that collide with a table for a window, the check
-- an assignment makes before it writes (the same rows the exclusion constraint guards).
SELECT a.id, a.booking_id
  FROM public.allocations AS a
 WHERE a.restaurant_id = %(restaurant_id)s::uuid
   AND a.resource_type = 'table'
   AND a.resource_id = %(resource_id)s::uuid
   AND a."window" && tstzrange(%(window_start)s::timestamptz, %(window_end)s::timestamptz)
   AND NOT a.shadow
