-- Check of down.sql: raises (SQLSTATE RV001) naming the first thing that is not back at the baseline.
DO $verify$
DECLARE
    v_con   record;
    v_wrong text;
BEGIN
    SELECT c.condeferrable, c.condeferred, pg_get_constraintdef(c.oid) AS def INTO v_con
      FROM pg_constraint c
     WHERE c.conrelid = 'public.allocations'::regclass
       AND c.conname = 'allocations_resource_window_excl' AND c.contype = 'x';
    IF NOT FOUND THEN
        RAISE EXCEPTION 'verify down: exclusion constraint allocations_resource_window_excl is missing' USING ERRCODE = 'RV001';
    END IF;
    IF v_con.def <> 'EXCLUDE USING gist (resource_type WITH =, resource_id WITH =, "window" WITH &&) DEFERRABLE INITIALLY DEFERRED' THEN
        RAISE EXCEPTION 'verify down: allocations_resource_window_excl is defined as %', v_con.def USING ERRCODE = 'RV001';
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = 'public.allocations'::regclass
                AND conname = 'allocations_no_overlap') THEN
        RAISE EXCEPTION 'verify down: allocations_no_overlap is still there' USING ERRCODE = 'RV001';
    END IF;
    IF to_regclass('public.allocations_resource_window_idx') IS NULL THEN
        RAISE EXCEPTION 'verify down: index allocations_resource_window_idx is missing' USING ERRCODE = 'RV001';
    END IF;
    IF to_regclass('public.booking_confirmation_results') IS NOT NULL THEN
        RAISE EXCEPTION 'verify down: booking_confirmation_results still exists' USING ERRCODE = 'RV001';
    END IF;
    IF to_regprocedure('public.confirm_hold_assignment_tx(uuid, uuid, text, boolean, uuid, public.booking_status)') IS NULL THEN
        RAISE EXCEPTION 'verify down: confirm_hold_assignment_tx has lost its signature' USING ERRCODE = 'RV001';
    END IF;
    -- The baseline's EXECUTE grants, which the up narrowed: PUBLIC (PostgreSQL's default) and
    -- every API role (Supabase's default privileges).
    SELECT string_agg(g.grantee, ', ' ORDER BY g.grantee) INTO v_wrong
      FROM unnest(ARRAY['public', 'anon', 'authenticated', 'service_role']) AS g (grantee)
     WHERE NOT has_function_privilege(g.grantee, 'public.confirm_hold_assignment_tx(uuid, uuid, text, boolean, uuid, public.booking_status)'::regprocedure, 'EXECUTE');
    IF v_wrong IS NOT NULL THEN
        RAISE EXCEPTION 'verify down: EXECUTE on confirm_hold_assignment_tx is not back for %', v_wrong USING ERRCODE = 'RV001';
    END IF;
END
$verify$;
