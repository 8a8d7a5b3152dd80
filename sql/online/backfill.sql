-- One batch of the backfill: the rows stored in blocks [from_block, to_block) of {live}, as
-- this statement's snapshot sees them. A row an update moved into a later block may come
-- twice (the first copy stays; its change is logged and the catch-up rewrites it).
INSERT INTO {copy} ({columns})
SELECT {columns} FROM ONLY {live}
 WHERE ctid >= format('(%%s,0)', %(from_block)s::bigint)::tid
   AND ctid < format('(%%s,0)', %(to_block)s::bigint)::tid
ON CONFLICT ({key}) DO NOTHING
