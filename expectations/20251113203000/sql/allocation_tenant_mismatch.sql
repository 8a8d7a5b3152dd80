-- Allocations whose tenant is not their booking's, or (for tables) not their table's: the
-- new constraint compares restaurant_id, so it must be right on every row.
SELECT a.id, a.restaurant_id, a.booking_id, a.resource_type, a.resource_id
  FROM {batch} AS a  -- with a join, GX leaves the aliasing to us
  LEFT JOIN public.bookings AS b ON b.id = a.booking_id
  LEFT JOIN public.table_inventory AS t ON a.resource_type = 'table' AND t.id = a.resource_id
 WHERE (a.booking_id IS NOT NULL AND b.restaurant_id IS DISTINCT FROM a.restaurant_id)
    OR (a.resource_type = 'table' AND t.restaurant_id IS DISTINCT FROM a.restaurant_id)
