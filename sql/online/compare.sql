-- The copy and {live} in one snapshot: rows and an order-independent checksum of their
-- common columns each. Equal after a catch-up round in the same transaction, or rows were lost.
SELECT (SELECT count(*) FROM ONLY {live}) AS live_rows,
       (SELECT coalesce(sum(hashtextextended({live_row}::text, 0)), 0) FROM ONLY {live} AS l) AS live_sum,
       (SELECT count(*) FROM ONLY {copy}) AS copy_rows,
       (SELECT coalesce(sum(hashtextextended({copy_row}::text, 0)), 0) FROM ONLY {copy} AS c) AS copy_sum
