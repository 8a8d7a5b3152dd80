-- A database's schema as (kind, name, definition) rows: no OIDs, no physical details,
-- so two databases with the same schema give the same rows. %(schemas)s: schemas to read.
WITH ns AS (
    SELECT oid, nspname FROM pg_namespace WHERE nspname = ANY (%(schemas)s)
)
SELECT 'extension' AS kind, e.extname::text AS name,
       format('schema %%s, version %%s', n.nspname, e.extversion) AS definition
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE e.extname <> 'plpgsql'
UNION ALL
SELECT 'type', format('%%s.%%s', ns.nspname, t.typname),
       'enum (' || (SELECT string_agg(quote_literal(enumlabel), ', ' ORDER BY enumsortorder)
                      FROM pg_enum WHERE enumtypid = t.oid) || ')'
  FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
 WHERE t.typtype = 'e'
UNION ALL
SELECT 'table', format('%%s.%%s', ns.nspname, c.relname),
       format('owner %%s; row level security %%s%%s', pg_get_userbyid(c.relowner),
              CASE WHEN c.relrowsecurity THEN 'on' ELSE 'off' END,
              CASE WHEN c.relforcerowsecurity THEN ' (forced)' ELSE '' END)
  FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p')
UNION ALL
SELECT 'column', format('%%s.%%s.%%s', ns.nspname, c.relname, a.attname),
       format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
  FROM pg_attribute a
  JOIN pg_class c ON c.oid = a.attrelid
  JOIN ns ON ns.oid = c.relnamespace
  LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
 WHERE c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped
UNION ALL
SELECT 'constraint', format('%%s.%%s.%%s', ns.nspname, c.relname, con.conname),
       pg_get_constraintdef(con.oid)
  FROM pg_constraint con
  JOIN pg_class c ON c.oid = con.conrelid
  JOIN ns ON ns.oid = c.relnamespace
 WHERE con.contype <> 'n'  -- PostgreSQL 18 lists NOT NULL as constraints; columns carry them
UNION ALL
SELECT 'index', format('%%s.%%s', ns.nspname, ic.relname), pg_get_indexdef(i.indexrelid)
  FROM pg_index i
  JOIN pg_class ic ON ic.oid = i.indexrelid
  JOIN ns ON ns.oid = ic.relnamespace
UNION ALL
SELECT 'function', format('%%s.%%s', ns.nspname, p.oid::regprocedure::text),
       pg_get_functiondef(p.oid)
  FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
 WHERE p.prokind IN ('f', 'p')
   AND NOT EXISTS (SELECT 1 FROM pg_depend dep
                    WHERE dep.classid = 'pg_proc'::regclass AND dep.objid = p.oid
                      AND dep.deptype = 'e')
UNION ALL
SELECT 'policy', format('%%s.%%s.%%s', pol.schemaname, pol.tablename, pol.policyname),
       format('%%s for %%s to %%s using (%%s) with check (%%s)', pol.permissive, pol.cmd,
              array_to_string(pol.roles, ', '), coalesce(pol.qual, ''),
              coalesce(pol.with_check, ''))
  FROM pg_policies pol
 WHERE pol.schemaname = ANY (%(schemas)s)
UNION ALL
SELECT 'grant', format('%%s.%%s to %%s', ns.nspname, c.relname,
                       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(acl.grantee) END),
       string_agg(acl.privilege_type, ', ' ORDER BY acl.privilege_type)
  FROM pg_class c
  JOIN ns ON ns.oid = c.relnamespace
  CROSS JOIN LATERAL aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS acl
 WHERE c.relkind IN ('r', 'p', 'v', 'S')
 GROUP BY ns.nspname, c.relname, acl.grantee
UNION ALL
-- EXECUTE is who may call a function (PostgREST serves what anon may execute as an RPC):
-- part of the schema a rollback must restore, as the table grants are.
SELECT 'grant', format('%%s.%%s to %%s', ns.nspname, p.oid::regprocedure::text,
                       CASE WHEN acl.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(acl.grantee) END),
       string_agg(acl.privilege_type, ', ' ORDER BY acl.privilege_type)
  FROM pg_proc p
  JOIN ns ON ns.oid = p.pronamespace
  CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) AS acl
 WHERE p.prokind IN ('f', 'p')
   AND NOT EXISTS (SELECT 1 FROM pg_depend dep
                    WHERE dep.classid = 'pg_proc'::regclass AND dep.objid = p.oid
                      AND dep.deptype = 'e')
 GROUP BY ns.nspname, p.oid, acl.grantee
UNION ALL
SELECT 'trigger', format('%%s.%%s.%%s', ns.nspname, c.relname, t.tgname), pg_get_triggerdef(t.oid)
  FROM pg_trigger t
  JOIN pg_class c ON c.oid = t.tgrelid
  JOIN ns ON ns.oid = c.relnamespace
 WHERE NOT t.tgisinternal
ORDER BY 1, 2
