-- What public.allocations carries beyond the schema snapshot (sql/catalog/schema_snapshot.sql):
-- comments, options, column statistics targets and options, replica identity, trigger
-- states, publication membership, privileges as stored. The same after an online apply as
-- after a locking one. Read-only.
SELECT 'table' AS kind, c.relname::text AS name,
       concat_ws(' | ', obj_description(c.oid, 'pg_class'), array_to_string(c.reloptions, ','),
                 c.relreplident, c.relrowsecurity, c.relforcerowsecurity, c.relpersistence) AS fact
  FROM pg_class c WHERE c.oid = 'public.allocations'::regclass
UNION ALL
SELECT 'column', a.attname::text,
       concat_ws(' | ', col_description(a.attrelid, a.attnum), a.attnum, a.attstattarget::int,
                 a.attstorage, a.attcompression,
                 (SELECT string_agg(o, ',') FROM unnest(a.attoptions) AS o WHERE o !~ '^pg_attver='),
                 (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(a.attacl) AS x))
  FROM pg_attribute a
 WHERE a.attrelid = 'public.allocations'::regclass AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', con.conname::text,
       concat_ws(' | ', obj_description(con.oid, 'pg_constraint'), con.condeferrable,
                 con.condeferred, con.convalidated)
  FROM pg_constraint con WHERE con.conrelid = 'public.allocations'::regclass
UNION ALL
SELECT 'index', ic.relname::text,
       concat_ws(' | ', obj_description(ic.oid, 'pg_class'), i.indisclustered, i.indisreplident,
                 i.indisvalid, array_to_string(ic.reloptions, ','))
  FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
 WHERE i.indrelid = 'public.allocations'::regclass
UNION ALL
SELECT 'trigger', t.tgname::text, concat_ws(' | ', obj_description(t.oid, 'pg_trigger'), t.tgenabled)
  FROM pg_trigger t WHERE t.tgrelid = 'public.allocations'::regclass AND NOT t.tgisinternal
UNION ALL
SELECT 'policy', p.polname::text, coalesce(obj_description(p.oid, 'pg_policy'), '')
  FROM pg_policy p WHERE p.polrelid = 'public.allocations'::regclass
UNION ALL
SELECT 'publication', p.pubname::text, concat_ws(' | ', pr.prattrs::text, pg_get_expr(pr.prqual, pr.prrelid))
  FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
 WHERE pr.prrelid = 'public.allocations'::regclass
UNION ALL
SELECT 'grant', 'allocations', (SELECT string_agg(x::text, ',' ORDER BY x::text) FROM unnest(c.relacl) AS x)
  FROM pg_class c WHERE c.oid = 'public.allocations'::regclass
ORDER BY 1, 2
