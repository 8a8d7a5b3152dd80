-- A booking cancelled and purged: its allocations go with it (ON DELETE CASCADE).
DELETE FROM public.bookings WHERE id = %(booking_id)s
