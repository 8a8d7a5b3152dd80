-- Confirmation cache rows whose tenant is not their booking's tenant.
SELECT c.booking_id, c.idempotency_key, c.restaurant_id, b.restaurant_id AS booking_restaurant_id
  FROM {batch} AS c  -- with a join, GX leaves the aliasing to us
  JOIN public.bookings AS b ON b.id = c.booking_id
 WHERE c.restaurant_id <> b.restaurant_id
