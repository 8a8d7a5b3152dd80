-- A real allocation on the same table, tenant and time as an existing real one: every
-- version of the exclusion constraint forbids it, so this must never commit.
INSERT INTO public.allocations (booking_id, restaurant_id, resource_type, resource_id, "window")
SELECT NULL, a.restaurant_id, a.resource_type, a.resource_id, a."window"
  FROM public.allocations AS a
 WHERE NOT a.shadow AND a.resource_type = 'table'
 ORDER BY a.id
 LIMIT 1
