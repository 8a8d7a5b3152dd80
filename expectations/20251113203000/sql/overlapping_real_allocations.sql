-- Non-shadow allocations that overlap an earlier one on the same (restaurant, resource type,
-- resource id): what allocations_no_overlap forbids. One sort rather than pairing rows up, so
-- it stays cheap at millions of rows; exact for '[)' windows (the pre-migration suite checks
-- that every window is one). Without a join in the query, GX aliases the batch itself.
SELECT id, restaurant_id, resource_type, resource_id, "window", booking_id
  FROM (
      SELECT *,
             max(upper("window")) OVER (
                 PARTITION BY restaurant_id, resource_type, resource_id
                 ORDER BY lower("window"), id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS furthest_end_before
        FROM {batch}
       WHERE NOT shadow
  ) AS ordered
 WHERE lower("window") < furthest_end_before
