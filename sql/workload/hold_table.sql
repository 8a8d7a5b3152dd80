-- A guest picks a table and a time: a pending booking, a hold on the table for it and the
-- hold's shadow allocation, as the booking flow writes them before the confirm.
WITH booking AS (
    INSERT INTO public.bookings (restaurant_id, start_at, end_at, party_size, status)
    VALUES (%(restaurant_id)s, %(start_at)s, %(end_at)s, 2, 'pending')
    RETURNING id, restaurant_id, start_at, end_at
), hold AS (
    INSERT INTO public.table_holds (restaurant_id, booking_id, start_at, end_at)
    SELECT restaurant_id, id, start_at, end_at FROM booking
    RETURNING id, booking_id, restaurant_id, start_at, end_at
), member AS (
    INSERT INTO public.table_hold_members (hold_id, table_id)
    SELECT id, %(table_id)s FROM hold
), shadow AS (
    INSERT INTO public.allocations
           (booking_id, restaurant_id, resource_type, resource_id, "window", shadow)
    SELECT booking_id, restaurant_id, 'table', %(table_id)s,
           tstzrange(start_at, end_at, '[)'), true
      FROM hold
)
SELECT hold.id AS hold_id, hold.booking_id FROM hold
