-- Everything %(src)s carries, as the statements that give it to a table named
-- %(schema)s.%(name)s: one row per statement, (ord, kind, name, statement), in the order they
-- must run. Run with search_path = pg_catalog, so every name the definitions print is
-- schema-qualified. Kinds, and when the online apply runs them:
--   table, column, check, option, comment, grant, pkey  the empty copy, before the backfill
--   index, constraint, cluster, replica                 after the backfill, before the swap
--   fkey, trigger, publication                          in the swap, under its lock
--   validate                                            after the swap (name: the foreign key)
WITH src AS (
    SELECT c.oid, c.relname, n.nspname, c.reloptions, c.relrowsecurity, c.relforcerowsecurity,
           c.relreplident, c.relacl, c.relowner, c.reltoastrelid,
           format('%%I.%%I', n.nspname, c.relname) AS qualified
      FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.oid = %(src)s::regclass
), dest AS (
    SELECT format('%%I.%%I', %(schema)s::text, %(name)s::text) AS qualified
), cols AS (
    SELECT a.attnum, a.attname, a.attnotnull, a.attgenerated, a.attstorage, a.attcompression,
           a.attstattarget::int AS attstattarget, a.attoptions, a.attacl, t.typstorage,
           format_type(a.atttypid, a.atttypmod) AS type,
           CASE WHEN a.attcollation <> t.typcollation
                THEN ' COLLATE ' || a.attcollation::regcollation::text ELSE '' END AS collation,
           pg_catalog.pg_get_expr(d.adbin, d.adrelid) AS expr
      FROM pg_catalog.pg_attribute a
      JOIN src ON a.attrelid = src.oid
      JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
     WHERE a.attnum > 0 AND NOT a.attisdropped
), cons AS (
    SELECT con.oid, con.conname, con.contype, con.convalidated, con.conindid,
           pg_catalog.pg_get_constraintdef(con.oid) AS def
      FROM pg_catalog.pg_constraint con JOIN src ON con.conrelid = src.oid
     WHERE con.contype IN ('c', 'p', 'u', 'x', 'f')
), idx AS (
    SELECT i.indexrelid, i.indisclustered, i.indisreplident, ic.relname,
           pg_catalog.pg_get_indexdef(i.indexrelid) AS def
      FROM pg_catalog.pg_index i
      JOIN src ON i.indrelid = src.oid
      JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
), acl AS (
    -- NULL privileges mean the owner's defaults: written out, so the copy's default
    -- privileges (which may differ in its schema) are replaced by exactly these.
    SELECT x.grantee, x.privilege_type, x.is_grantable
      FROM src, aclexplode(coalesce(src.relacl, acldefault('r', src.relowner))) AS x
), grants AS (
    SELECT acl.grantee, acl.is_grantable,
           string_agg(acl.privilege_type, ', ' ORDER BY acl.privilege_type) AS privileges
      FROM acl GROUP BY acl.grantee, acl.is_grantable
), col_grants AS (
    SELECT cols.attname, x.grantee, x.is_grantable,
           string_agg(x.privilege_type, ', ' ORDER BY x.privilege_type) AS privileges
      FROM cols, aclexplode(cols.attacl) AS x
     WHERE cols.attacl IS NOT NULL
     GROUP BY cols.attname, x.grantee, x.is_grantable
)
-- The empty copy: columns, types, collations, defaults, generated expressions, NOT NULL.
SELECT 10 AS ord, 'table' AS kind, src.relname::text AS name,
       format('CREATE TABLE %%s (%%s)', dest.qualified,
              string_agg(format('%%I %%s%%s%%s%%s', cols.attname, cols.type, cols.collation,
                         CASE cols.attgenerated
                              WHEN 's' THEN format(' GENERATED ALWAYS AS (%%s) STORED', cols.expr)
                              WHEN 'v' THEN format(' GENERATED ALWAYS AS (%%s) VIRTUAL', cols.expr)
                              ELSE coalesce(' DEFAULT ' || cols.expr, '') END,
                         CASE WHEN cols.attnotnull THEN ' NOT NULL' ELSE '' END),
                         ', ' ORDER BY cols.attnum)) AS statement
  FROM src, dest, cols GROUP BY src.relname, dest.qualified
UNION ALL
SELECT 20, 'column', cols.attname::text, format('ALTER TABLE %%s ALTER COLUMN %%I SET STORAGE %%s', dest.qualified, cols.attname,
       CASE cols.attstorage WHEN 'p' THEN 'PLAIN' WHEN 'e' THEN 'EXTERNAL' WHEN 'm' THEN 'MAIN' ELSE 'EXTENDED' END)
  FROM cols, dest WHERE cols.attstorage <> cols.typstorage
UNION ALL
SELECT 21, 'column', cols.attname::text, format('ALTER TABLE %%s ALTER COLUMN %%I SET COMPRESSION %%s', dest.qualified, cols.attname,
       CASE cols.attcompression WHEN 'p' THEN 'pglz' WHEN 'l' THEN 'lz4' END)
  FROM cols, dest WHERE cols.attcompression IN ('p', 'l')
UNION ALL
SELECT 22, 'column', cols.attname::text, format('ALTER TABLE %%s ALTER COLUMN %%I SET STATISTICS %%s', dest.qualified, cols.attname, cols.attstattarget)
  FROM cols, dest WHERE cols.attstattarget >= 0
UNION ALL
-- (pg_attver: a per-creation stamp some PostgreSQL 15 builds give every column, not schema.)
SELECT 23, 'column', cols.attname::text, format('ALTER TABLE %%s ALTER COLUMN %%I SET (%%s)', dest.qualified, cols.attname, o.options)
  FROM cols, dest,
       LATERAL (SELECT string_agg(x, ', ') AS options FROM unnest(cols.attoptions) AS x
                 WHERE x !~ '^pg_attver=') AS o
 WHERE o.options IS NOT NULL
UNION ALL
SELECT 30, 'check', cons.conname::text, format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', dest.qualified, cons.conname, cons.def)
  FROM cons, dest WHERE cons.contype = 'c'
UNION ALL
SELECT 40, 'option', src.relname::text, format('ALTER TABLE %%s SET (%%s)', dest.qualified, array_to_string(src.reloptions, ', '))
  FROM src, dest WHERE src.reloptions IS NOT NULL
UNION ALL
SELECT 41, 'option', src.relname::text, format('ALTER TABLE %%s SET (%%s)', dest.qualified,
       (SELECT string_agg('toast.' || o, ', ') FROM unnest(toast.reloptions) AS o))
  FROM src, dest, pg_catalog.pg_class toast
 WHERE toast.oid = src.reltoastrelid AND toast.reloptions IS NOT NULL
UNION ALL
SELECT 42, 'option', src.relname::text, format('ALTER TABLE %%s ENABLE ROW LEVEL SECURITY', dest.qualified)
  FROM src, dest WHERE src.relrowsecurity
UNION ALL
SELECT 43, 'option', src.relname::text, format('ALTER TABLE %%s FORCE ROW LEVEL SECURITY', dest.qualified)
  FROM src, dest WHERE src.relforcerowsecurity
UNION ALL
SELECT 44, 'option', src.relname::text, format('ALTER TABLE %%s REPLICA IDENTITY %%s', dest.qualified,
       CASE src.relreplident WHEN 'f' THEN 'FULL' WHEN 'n' THEN 'NOTHING' END)
  FROM src, dest WHERE src.relreplident IN ('f', 'n')
UNION ALL
SELECT 50, 'comment', src.relname::text, format('COMMENT ON TABLE %%s IS %%L', dest.qualified, d)
  FROM src, dest, obj_description(src.oid, 'pg_class') AS d WHERE d IS NOT NULL
UNION ALL
SELECT 51, 'comment', cols.attname::text, format('COMMENT ON COLUMN %%s.%%I IS %%L', dest.qualified, cols.attname, d)
  FROM src, dest, cols, col_description(src.oid, cols.attnum) AS d WHERE d IS NOT NULL
UNION ALL
SELECT 52, 'comment', cons.conname::text, format('COMMENT ON CONSTRAINT %%I ON %%s IS %%L', cons.conname, dest.qualified, d)
  FROM cons, dest, obj_description(cons.oid, 'pg_constraint') AS d
 WHERE d IS NOT NULL AND cons.contype = 'c'
UNION ALL
SELECT 60, 'grant', pg_catalog.pg_get_userbyid(g.grantee)::text,
       format('GRANT %%s ON %%s TO %%s%%s', g.privileges, dest.qualified,
              CASE WHEN g.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(g.grantee)) END,
              CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
  FROM grants g, dest
UNION ALL
SELECT 61, 'grant', cg.attname::text,
       format('GRANT %%s (%%I) ON %%s TO %%s%%s', cg.privileges, cg.attname, dest.qualified,
              CASE WHEN cg.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(cg.grantee)) END,
              CASE WHEN cg.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END)
  FROM col_grants cg, dest
UNION ALL
-- Policies: created on the copy before it is filled (nobody but the rollout reads it).
SELECT 62, 'policy', p.polname::text,
       format('CREATE POLICY %%I ON %%s AS %%s FOR %%s TO %%s%%s%%s', p.polname, dest.qualified,
              CASE WHEN p.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
              CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                            WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
              (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(r)) END, ', ' ORDER BY r)
                 FROM unnest(p.polroles) AS r),
              coalesce(' USING (' || pg_catalog.pg_get_expr(p.polqual, p.polrelid) || ')', ''),
              coalesce(' WITH CHECK (' || pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) || ')', ''))
  FROM pg_catalog.pg_policy p, src, dest WHERE p.polrelid = src.oid
UNION ALL
SELECT 63, 'policy', p.polname::text, format('COMMENT ON POLICY %%I ON %%s IS %%L', p.polname, dest.qualified, d)
  FROM pg_catalog.pg_policy p, src, dest, obj_description(p.oid, 'pg_policy') AS d
 WHERE p.polrelid = src.oid AND d IS NOT NULL
UNION ALL
SELECT 70, 'pkey', cons.conname::text, format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', dest.qualified, cons.conname, cons.def)
  FROM cons, dest WHERE cons.contype = 'p'
UNION ALL
SELECT 71, 'pkey', cons.conname::text, format('COMMENT ON CONSTRAINT %%I ON %%s IS %%L', cons.conname, dest.qualified, d)
  FROM cons, dest, obj_description(cons.oid, 'pg_constraint') AS d WHERE d IS NOT NULL AND cons.contype = 'p'
UNION ALL
-- Indexes of their own (not behind a constraint): pg_get_indexdef names the table once, as
-- " ON <qualified> USING ": that is what is replaced by the copy's name.
SELECT 80, 'index', idx.relname::text,
       overlay(idx.def placing format(' ON %%s USING ', dest.qualified)
               from position(format(' ON %%s USING ', src.qualified) in idx.def)
               for length(format(' ON %%s USING ', src.qualified)))
  FROM idx, src, dest
 WHERE NOT EXISTS (SELECT 1 FROM cons WHERE cons.conindid = idx.indexrelid AND cons.contype IN ('p', 'u', 'x'))
UNION ALL
SELECT 81, 'constraint', cons.conname::text, format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', dest.qualified, cons.conname, cons.def)
  FROM cons, dest WHERE cons.contype IN ('u', 'x')
UNION ALL
SELECT 82, 'constraint', cons.conname::text, format('COMMENT ON CONSTRAINT %%I ON %%s IS %%L', cons.conname, dest.qualified, d)
  FROM cons, dest, obj_description(cons.oid, 'pg_constraint') AS d WHERE d IS NOT NULL AND cons.contype IN ('u', 'x')
UNION ALL
SELECT 83, 'constraint', idx.relname::text, format('COMMENT ON INDEX %%I.%%I IS %%L', %(schema)s::text, idx.relname, d)
  FROM idx, obj_description(idx.indexrelid, 'pg_class') AS d
 WHERE d IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM cons WHERE cons.conindid = idx.indexrelid AND cons.contype = 'p')
UNION ALL
SELECT 84, 'cluster', idx.relname::text, format('ALTER TABLE %%s CLUSTER ON %%I', dest.qualified, idx.relname)
  FROM idx, dest WHERE idx.indisclustered
UNION ALL
SELECT 85, 'replica', idx.relname::text, format('ALTER TABLE %%s REPLICA IDENTITY USING INDEX %%I', dest.qualified, idx.relname)
  FROM idx, src, dest WHERE idx.indisreplident AND src.relreplident = 'i'
UNION ALL
-- Foreign keys: the swap adds those named by a 'validate' row NOT VALID under its lock (no
-- scan) and validates them after it (no lock the application waits for); one that is NOT
-- VALID on the original stays so.
SELECT 90, 'fkey', cons.conname::text,
       format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', dest.qualified, cons.conname, cons.def)
  FROM cons, dest WHERE cons.contype = 'f'
UNION ALL
SELECT 91, 'fkey', cons.conname::text, format('COMMENT ON CONSTRAINT %%I ON %%s IS %%L', cons.conname, dest.qualified, d)
  FROM cons, dest, obj_description(cons.oid, 'pg_constraint') AS d WHERE d IS NOT NULL AND cons.contype = 'f'
UNION ALL
SELECT 92, 'validate', cons.conname::text, ''
  FROM cons WHERE cons.contype = 'f' AND cons.convalidated
UNION ALL
-- The table's own triggers (not the rollout's capture triggers, not internal ones), with the
-- state each is enabled in; created in the swap, after the last catch-up, so they never fire
-- on the copying.
SELECT 100, 'trigger', tg.tgname::text,
       overlay(def placing format(' ON %%s ', dest.qualified)
               from position(format(' ON %%s ', src.qualified) in def)
               for length(format(' ON %%s ', src.qualified)))
  FROM pg_catalog.pg_trigger tg, src, dest, pg_catalog.pg_get_triggerdef(tg.oid) AS def
 WHERE tg.tgrelid = src.oid AND NOT tg.tgisinternal AND tg.tgname !~ '^rollout_online_'
UNION ALL
SELECT 101, 'trigger', tg.tgname::text, format('ALTER TABLE %%s %%s TRIGGER %%I', dest.qualified,
       CASE tg.tgenabled WHEN 'D' THEN 'DISABLE' WHEN 'R' THEN 'ENABLE REPLICA' ELSE 'ENABLE ALWAYS' END, tg.tgname)
  FROM pg_catalog.pg_trigger tg, src, dest
 WHERE tg.tgrelid = src.oid AND NOT tg.tgisinternal AND tg.tgname !~ '^rollout_online_' AND tg.tgenabled <> 'O'
UNION ALL
SELECT 102, 'trigger', tg.tgname::text, format('COMMENT ON TRIGGER %%I ON %%s IS %%L', tg.tgname, dest.qualified, d)
  FROM pg_catalog.pg_trigger tg, src, dest, obj_description(tg.oid, 'pg_trigger') AS d
 WHERE tg.tgrelid = src.oid AND NOT tg.tgisinternal AND tg.tgname !~ '^rollout_online_' AND d IS NOT NULL
UNION ALL
-- Publications that list the table by name (not FOR ALL TABLES or a whole schema: those take
-- the new table in by themselves), with their column lists and row filters.
SELECT 110, 'publication', p.pubname::text,
       format('ALTER PUBLICATION %%I ADD TABLE ONLY %%s%%s%%s', p.pubname, dest.qualified,
              coalesce((SELECT format(' (%%s)', string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum))
                          FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = src.oid AND a.attnum = ANY (pr.prattrs::int2[])
                        HAVING count(*) > 0), ''),
              coalesce(' WHERE (' || pg_catalog.pg_get_expr(pr.prqual, pr.prrelid) || ')', ''))
  FROM pg_catalog.pg_publication_rel pr
  JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
  JOIN src ON pr.prrelid = src.oid, dest
ORDER BY 1, 3, 4
