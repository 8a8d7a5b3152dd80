-- Day view: a restaurant's floor plan for one day, every allocation (holds included) with
-- its booking, in the order the host's screen shows them.
SELECT a.resource_type, a.resource_id, a."window", a.shadow, b.reference, b.party_size, b.status
  FROM public.allocations AS a
  LEFT JOIN public.bookings AS b ON b.id = a.booking_id
 WHERE a.restaurant_id = %(restaurant_id)s::uuid
   AND a."window" && tstzrange(%(day_start)s::timestamptz, %(day_end)s::timestamptz)
 ORDER BY a.resource_id, lower(a."window")
