-- Check of up.sql: raises (SQLSTATE RV001) naming the first thing that is not as the up leaves it.
DO $verify$
DECLARE
    v_con   record;
    v_wrong text;
BEGIN
    SELECT c.condeferrable, c.condeferred, pg_get_constraintdef(c.oid) AS def INTO v_con
      FROM pg_constraint c
     WHERE c.conrelid = 'public.allocations'::regclass AND c.conname = 'allocations_no_overlap'
       AND c.contype = 'x';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'verify up: exclusion constraint allocations_no_overlap is missing' USING ERRCODE = 'RV001';
    END IF;
    IF v_con.def <> 'EXCLUDE USING gist (resource_id WITH =, "window" WITH &&, restaurant_id WITH =, resource_type WITH =) WHERE ((NOT shadow)) DEFERRABLE' THEN
        RAISE EXCEPTION 'verify up: allocations_no_overlap is defined as %', v_con.def USING ERRCODE = 'RV001';
    END IF;
    IF NOT v_con.condeferrable OR v_con.condeferred THEN
        RAISE EXCEPTION 'verify up: allocations_no_overlap must be DEFERRABLE INITIALLY IMMEDIATE' USING ERRCODE = 'RV001';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'public.allocations'::regclass
                AND conname = 'allocations_resource_window_excl') THEN
        RAISE EXCEPTION 'verify up: the old constraint allocations_resource_window_excl is still there' USING ERRCODE = 'RV001';
    END IF;
    IF to_regclass('public.allocations_resource_window_idx') IS NULL THEN
        RAISE EXCEPTION 'verify up: index allocations_resource_window_idx is missing (the up keeps it)' USING ERRCODE = 'RV001';
    END IF;
    IF NOT coalesce((SELECT relrowsecurity FROM pg_class
                      WHERE oid = to_regclass('public.booking_confirmation_results')), false) THEN
        RAISE EXCEPTION 'verify up: booking_confirmation_results is missing or has RLS off' USING ERRCODE = 'RV001';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_policies WHERE schemaname = 'public'
                    AND tablename = 'booking_confirmation_results'
                    AND policyname = 'booking_confirmation_results_tenant') THEN
        RAISE EXCEPTION 'verify up: the tenant policy on booking_confirmation_results is missing' USING ERRCODE = 'RV001';
    END IF;
    -- The cache's grants, whatever the schema's default privileges: row privileges for
    -- authenticated (RLS picks the rows; no TRUNCATE, REFERENCES or TRIGGER), all for
    -- service_role, none for anon or PUBLIC.
    SELECT string_agg(format('%s %s %s', g.grantee,
                             CASE WHEN g.expected THEN 'lacks' ELSE 'holds' END, g.privilege),
                      ', ' ORDER BY g.grantee, g.privilege)
      INTO v_wrong
      FROM (SELECT r.grantee, p.privilege,
                   CASE r.grantee WHEN 'service_role' THEN true
                                  WHEN 'authenticated' THEN p.privilege IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE')
                                  ELSE false END AS expected
              FROM unnest(ARRAY['public', 'anon', 'authenticated', 'service_role']) AS r (grantee)
             CROSS JOIN unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) AS p (privilege)) g
     WHERE has_table_privilege(g.grantee, 'public.booking_confirmation_results', g.privilege)
           IS DISTINCT FROM g.expected;
    IF v_wrong IS NOT NULL THEN
        RAISE EXCEPTION 'verify up: grants on booking_confirmation_results: %', v_wrong USING ERRCODE = 'RV001';
    END IF;
    IF to_regprocedure('public.confirm_hold_assignment_tx(uuid, uuid, text, boolean, uuid, public.booking_status)') IS NULL THEN
        RAISE EXCEPTION 'verify up: confirm_hold_assignment_tx has lost its signature' USING ERRCODE = 'RV001';
    END IF;
    -- PostgREST serves what anon may execute as an RPC to the public anon key.
    SELECT string_agg(format('%s %s EXECUTE', g.grantee, CASE WHEN g.expected THEN 'lacks' ELSE 'holds' END),
                      ', ' ORDER BY g.grantee)
      INTO v_wrong
      FROM (VALUES ('public', false), ('anon', false), ('authenticated', true), ('service_role', true)) AS g (grantee, expected)
     WHERE has_function_privilege(g.grantee, 'public.confirm_hold_assignment_tx(uuid, uuid, text, boolean, uuid, public.booking_status)'::regprocedure, 'EXECUTE')
           IS DISTINCT FROM g.expected;
    IF v_wrong IS NOT NULL THEN
        RAISE EXCEPTION 'verify up: grants on confirm_hold_assignment_tx: %', v_wrong USING ERRCODE = 'RV001';
    END IF;
END
$verify$;
