-- A guest moves a confirmed booking to another time: its allocations follow it.
WITH moved AS (
    UPDATE public.bookings SET start_at = %(start_at)s, end_at = %(end_at)s, updated_at = now()
     WHERE id = %(booking_id)s
    RETURNING id
)
UPDATE public.allocations AS a
   SET "window" = tstzrange(%(start_at)s, %(end_at)s, '[)'), updated_at = now()
  FROM moved
 WHERE a.booking_id = moved.id
RETURNING a.id
