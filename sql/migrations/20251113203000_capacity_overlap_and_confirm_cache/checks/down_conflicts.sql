-- The allocation pairs that would violate the pre-migration constraint
-- allocations_resource_window_excl: what makes down.sql refuse. Read-only.
WITH reach AS (
    -- One sort per resource: a row that starts before the furthest end of the rows
    -- sorted before it overlaps one of them (or at it, when both bounds are inclusive;
    -- '[)' bookings that merely touch do not). Only those resources are paired up.
    SELECT a.resource_type, a.resource_id, a."window",
           max(coalesce(upper(a."window"), 'infinity')) OVER (
               PARTITION BY a.resource_type, a.resource_id
               ORDER BY coalesce(lower(a."window"), '-infinity'), a.id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS furthest_end,
           bool_or(upper_inc(a."window")) OVER (
               PARTITION BY a.resource_type, a.resource_id
               ORDER BY coalesce(lower(a."window"), '-infinity'), a.id
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS some_end_inclusive
      FROM public.allocations a
     WHERE NOT isempty(a."window")
), suspects AS (
    SELECT DISTINCT resource_type, resource_id FROM reach
     WHERE coalesce(lower("window"), '-infinity') < furthest_end
        OR (coalesce(lower("window"), '-infinity') = furthest_end
            AND lower_inc("window") AND some_end_inclusive)
)
SELECT a.resource_type, a.resource_id,
       a.id AS allocation_id, a.restaurant_id, a.booking_id, a.shadow, a."window",
       b.id AS other_allocation_id, b.restaurant_id AS other_restaurant_id,
       b.booking_id AS other_booking_id, b.shadow AS other_shadow, b."window" AS other_window
  FROM suspects s
  JOIN public.allocations a USING (resource_type, resource_id)
  JOIN public.allocations b
    ON b.resource_type = a.resource_type AND b.resource_id = a.resource_id
   AND a.id < b.id AND a."window" && b."window"
 ORDER BY a.resource_type, a.resource_id, lower(a."window"), a.id, b.id;
