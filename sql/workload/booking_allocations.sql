-- A booking's allocations as its own transaction sees them: what a writer logs as committed.
SELECT a.id, a.shadow, lower(a."window") AS start_at
  FROM public.allocations AS a
 WHERE a.booking_id = %(booking_id)s
 ORDER BY a.id
