-- How big %(table)s is (heap, TOAST and indexes) and its rows and blocks as last counted:
-- the online apply writes a second copy of all of it before the old one is dropped.
SELECT pg_total_relation_size(c.oid) AS total_bytes,
       pg_relation_size(c.oid) AS heap_bytes,
       pg_relation_size(c.oid) / current_setting('block_size')::bigint AS blocks,
       greatest(c.reltuples, 0)::bigint AS estimated_rows
  FROM pg_catalog.pg_class c WHERE c.oid = %(table)s::regclass
