-- Every table a guest could book, with its restaurant: the writers pick from these.
SELECT t.restaurant_id, t.id AS table_id
  FROM public.table_inventory AS t
 ORDER BY t.id
