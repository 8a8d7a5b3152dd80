-- The application announces a new booking to the outbox's consumers.
INSERT INTO public.capacity_outbox (event_type, restaurant_id, payload)
SELECT 'booking.created', r.id, jsonb_build_object('source', 'app')
  FROM public.restaurants AS r
 ORDER BY random()
 LIMIT 1
