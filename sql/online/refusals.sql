-- What keeps %(table)s from being rebuilt beside itself and swapped in by name: one row per
-- problem, saying what it is. An empty result means the online apply can move everything the
-- table carries. Read-only.
WITH t AS (
    SELECT c.oid, c.reltype, c.relkind, c.relpersistence, c.reltablespace, c.relowner,
           c.relforcerowsecurity, c.reltoastrelid
      FROM pg_catalog.pg_class c WHERE c.oid = %(table)s::regclass
), own AS (
    -- The table's own parts: they are rebuilt on the copy, not refused.
    SELECT 'pg_catalog.pg_class'::regclass AS classid, i.indexrelid AS objid FROM pg_catalog.pg_index i, t WHERE i.indrelid = t.oid
    UNION ALL SELECT 'pg_catalog.pg_constraint'::regclass, con.oid FROM pg_catalog.pg_constraint con, t WHERE con.conrelid = t.oid
    UNION ALL SELECT 'pg_catalog.pg_attrdef'::regclass, d.oid FROM pg_catalog.pg_attrdef d, t WHERE d.adrelid = t.oid
    UNION ALL SELECT 'pg_catalog.pg_trigger'::regclass, tg.oid FROM pg_catalog.pg_trigger tg, t WHERE tg.tgrelid = t.oid
    UNION ALL SELECT 'pg_catalog.pg_policy'::regclass, p.oid FROM pg_catalog.pg_policy p, t WHERE p.polrelid = t.oid
    UNION ALL SELECT 'pg_catalog.pg_publication_rel'::regclass, pr.oid FROM pg_catalog.pg_publication_rel pr, t WHERE pr.prrelid = t.oid
    UNION ALL SELECT 'pg_catalog.pg_type'::regclass, t.reltype FROM t
    UNION ALL SELECT 'pg_catalog.pg_class'::regclass, t.reltoastrelid FROM t WHERE t.reltoastrelid <> 0
)
SELECT format('it is not a plain table (relkind %%s)', t.relkind) FROM t WHERE t.relkind <> 'r'
UNION ALL
SELECT 'it is UNLOGGED or temporary' FROM t WHERE t.relpersistence <> 'p'
UNION ALL
SELECT 'it lives in a tablespace of its own' FROM t WHERE t.reltablespace <> 0
UNION ALL
SELECT format('it is owned by %%s, not by %%s: run the online apply as the table''s owner',
              pg_catalog.pg_get_userbyid(t.relowner), current_user)
  FROM t WHERE t.relowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
UNION ALL
SELECT format('%%s has FORCE ROW LEVEL SECURITY and %%s does not bypass RLS: the copy could miss rows',
              %(table)s, current_user)
  FROM t WHERE t.relforcerowsecurity
   AND NOT (SELECT rolbypassrls FROM pg_catalog.pg_roles WHERE rolname = current_user)
UNION ALL
SELECT 'it has no primary key (the change log names rows by it)'
  FROM t WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con
                            WHERE con.conrelid = t.oid AND con.contype = 'p')
UNION ALL
SELECT format('it takes part in inheritance or partitioning (%%s)', i.inhrelid::regclass)
  FROM pg_catalog.pg_inherits i, t WHERE t.oid IN (i.inhrelid, i.inhparent)
UNION ALL
SELECT format('column %%I is an identity column or takes its values from a sequence it owns (%%s)',
              a.attname, s.objid::regclass)
  FROM pg_catalog.pg_depend s
  JOIN t ON s.refobjid = t.oid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = s.refobjsubid
 WHERE s.classid = 'pg_catalog.pg_class'::regclass AND s.refclassid = 'pg_catalog.pg_class'::regclass
   AND s.deptype IN ('a', 'i')
   AND (SELECT relkind FROM pg_catalog.pg_class WHERE oid = s.objid) = 'S'
UNION ALL
SELECT format('index %%s is INVALID (a failed CREATE INDEX CONCURRENTLY?): drop or rebuild it first',
              i.indexrelid::regclass)
  FROM pg_catalog.pg_index i, t WHERE i.indrelid = t.oid AND NOT i.indisvalid
UNION ALL
SELECT format('foreign key %%I of %%s points at the table itself', con.conname, con.conrelid::regclass)
  FROM pg_catalog.pg_constraint con, t WHERE con.confrelid = t.oid AND con.contype = 'f'
   AND con.conrelid = t.oid
UNION ALL
SELECT format('publication %%I lists it and is owned by %%s, not by %%s',
              p.pubname, pg_catalog.pg_get_userbyid(p.pubowner), current_user)
  FROM pg_catalog.pg_publication_rel pr
  JOIN pg_catalog.pg_publication p ON p.oid = pr.prpubid
  JOIN t ON pr.prrelid = t.oid
 WHERE p.pubowner <> (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = current_user)
UNION ALL
-- Everything else that refers to the table (or its row type) by OID would keep pointing at the
-- old table after the swap: views, foreign keys of other tables, rules, other tables' policies,
-- functions taking its row type, extended statistics.
SELECT DISTINCT format('%%s depends on it',
       CASE WHEN d.classid = 'pg_catalog.pg_rewrite'::regclass
            THEN (SELECT format('%%s %%s', CASE c.relkind WHEN 'm' THEN 'materialized view' WHEN 'v' THEN 'view' ELSE 'a rule of table' END,
                                r.ev_class::regclass)
                    FROM pg_catalog.pg_rewrite r JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
                   WHERE r.oid = d.objid)
            ELSE pg_catalog.pg_describe_object(d.classid, d.objid, d.objsubid) END)
  FROM pg_catalog.pg_depend d, t
 WHERE ((d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = t.oid)
        OR (d.refclassid = 'pg_catalog.pg_type'::regclass AND d.refobjid = t.reltype))
   AND d.deptype <> 'i'
   AND NOT (d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = t.oid)
   AND NOT EXISTS (SELECT 1 FROM own WHERE own.classid = d.classid AND own.objid = d.objid)
   AND NOT (d.classid = 'pg_catalog.pg_class'::regclass
            AND (SELECT relkind FROM pg_catalog.pg_class WHERE oid = d.objid) = 'S')
