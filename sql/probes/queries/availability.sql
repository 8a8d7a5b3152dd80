-- Availability: the tables of a restaurant big enough for a party and free for a window.
-- Held tables (shadow allocations) count as taken: a table on hold cannot be offered.
SELECT t.id
  FROM public.table_inventory AS t
 WHERE t.restaurant_id = %(restaurant_id)s::uuid
   AND t.capacity >= %(party_size)s
   AND NOT EXISTS (
       SELECT 1
         FROM public.allocations AS a
        WHERE a.restaurant_id = %(restaurant_id)s::uuid
          AND a.resource_type = 'table'
          AND a.resource_id = t.id
          AND a."window" && tstzrange(%(window_start)s::timestamptz, %(window_end)s::timestamptz))
