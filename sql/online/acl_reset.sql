-- The privileges a new copy got by default (its schema's and its creator's default
-- privileges), revoked so that only the original's are granted to it: one statement a row.
SELECT format('REVOKE ALL ON %%s FROM %%s', %(table)s::regclass,
              CASE WHEN x.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_catalog.pg_get_userbyid(x.grantee)) END)
  FROM pg_catalog.pg_class c,
       aclexplode(coalesce(c.relacl, acldefault('r', c.relowner))) AS x
 WHERE c.oid = %(table)s::regclass
 GROUP BY x.grantee
