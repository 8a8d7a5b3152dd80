-- 20251113203000_capacity_overlap_and_confirm_cache — down
--
-- Restores the baseline exactly: the old constraint (no tenant column, no shadow filter,
-- INITIALLY DEFERRED), the old confirm function and its grants, no cache table. (The up
-- keeps the GiST index allocations_resource_window_idx, so there is nothing to restore.)
--
-- After the up, shadow allocations may legitimately overlap real ones (and two tenants
-- may share a resource id); the old constraint would then fail. This script refuses by
-- itself, with SQLSTATE RB001, before changing anything, and never deletes or edits an
-- allocation or a booking to get through. checks/down_conflicts.sql lists the pairs.
BEGIN;

DO $refuse$
DECLARE
    v_pairs bigint;
BEGIN
    WITH reach AS (
        -- One sort per resource: a row that starts before the furthest end of the rows
        -- sorted before it overlaps one of them (or at it, when both bounds are inclusive;
        -- '[)' bookings that merely touch do not). Only those resources are paired up.
        SELECT a.resource_type, a.resource_id, a."window",
               max(coalesce(upper(a."window"), 'infinity')) OVER (
                   PARTITION BY a.resource_type, a.resource_id
                   ORDER BY coalesce(lower(a."window"), '-infinity'), a.id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS furthest_end,
               bool_or(upper_inc(a."window")) OVER (
                   PARTITION BY a.resource_type, a.resource_id
                   ORDER BY coalesce(lower(a."window"), '-infinity'), a.id
                   ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS some_end_inclusive
          FROM public.allocations a
         WHERE NOT isempty(a."window")
    ), suspects AS (
        SELECT DISTINCT resource_type, resource_id FROM reach
         WHERE coalesce(lower("window"), '-infinity') < furthest_end
            OR (coalesce(lower("window"), '-infinity') = furthest_end
                AND lower_inc("window") AND some_end_inclusive)
    )
    SELECT count(*) INTO v_pairs
      FROM suspects s
      JOIN public.allocations a USING (resource_type, resource_id)
      JOIN public.allocations b
        ON b.resource_type = a.resource_type AND b.resource_id = a.resource_id
       AND a.id < b.id AND a."window" && b."window";
    IF v_pairs > 0 THEN
        RAISE EXCEPTION 'rollback refused: % allocation pair(s) would overlap under the restored constraint allocations_resource_window_excl', v_pairs
            USING ERRCODE = 'RB001',
                  HINT = 'list them with sql/migrations/20251113203000_capacity_overlap_and_confirm_cache/checks/down_conflicts.sql; resolve them (e.g. release the overlapping holds) or keep the migration';
    END IF;
END
$refuse$;

CREATE OR REPLACE FUNCTION public.confirm_hold_assignment_tx(
    p_hold_id           uuid,
    p_booking_id        uuid,
    p_idempotency_key   text,
    p_require_adjacency boolean DEFAULT false,
    p_assigned_by       uuid DEFAULT NULL,
    p_target_status     public.booking_status DEFAULT NULL
) RETURNS TABLE (table_id uuid, start_at timestamptz, end_at timestamptz, merge_group_id uuid)
    LANGUAGE plpgsql
    SECURITY DEFINER
    SET search_path = public
AS $$
#variable_conflict use_column
DECLARE
    v_hold      public.table_holds%ROWTYPE;
    v_table_ids uuid[];
BEGIN
    SELECT * INTO v_hold FROM public.table_holds h WHERE h.id = p_hold_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'hold_not_found' USING ERRCODE = 'P0002',
            DETAIL = format('hold %s does not exist', p_hold_id);
    END IF;
    IF v_hold.booking_id IS NOT NULL AND v_hold.booking_id <> p_booking_id THEN
        RAISE EXCEPTION 'hold_booking_mismatch' USING ERRCODE = 'P0001',
            DETAIL = format('hold %s belongs to booking %s', p_hold_id, v_hold.booking_id);
    END IF;
    IF v_hold.expires_at <= now() THEN
        RAISE EXCEPTION 'hold_expired' USING ERRCODE = 'P0001',
            DETAIL = format('hold %s expired at %s', p_hold_id, v_hold.expires_at);
    END IF;

    SELECT array_agg(m.table_id ORDER BY m.table_id) INTO v_table_ids
      FROM public.table_hold_members m WHERE m.hold_id = p_hold_id;
    IF v_table_ids IS NULL THEN
        RAISE EXCEPTION 'hold_has_no_tables' USING ERRCODE = 'P0001';
    END IF;

    -- The hold's own tentative allocations would collide with the real ones.
    DELETE FROM public.allocations a
     WHERE a.shadow
       AND a.restaurant_id = v_hold.restaurant_id
       AND a.resource_type = 'table'
       AND a.resource_id = ANY (v_table_ids)
       AND a."window" = tstzrange(v_hold.start_at, v_hold.end_at, '[)');

    RETURN QUERY
        SELECT * FROM public.assign_tables_atomic_v2(
            p_booking_id, v_table_ids, p_idempotency_key, p_require_adjacency,
            p_assigned_by, v_hold.start_at, v_hold.end_at);

    IF p_target_status IS NOT NULL THEN
        UPDATE public.bookings b SET status = p_target_status, updated_at = now()
         WHERE b.id = p_booking_id;
    END IF;

    DELETE FROM public.table_holds h WHERE h.id = p_hold_id;
END
$$;

-- The up took EXECUTE from PUBLIC and anon; the baseline has it (PostgreSQL's default for
-- PUBLIC, Supabase's default privileges for anon), so it goes back: the down restores the
-- baseline exactly, and with it the exposure the up closed (anon may call the old confirm,
-- which has no tenant check either). CREATE OR REPLACE keeps a function's grants, so they
-- are set here. authenticated and service_role are granted again after anon because a
-- grant is appended to the function's ACL and pg_dump prints the grants in ACL order: in
-- this order the dump is the baseline's, line for line.
REVOKE EXECUTE ON FUNCTION public.confirm_hold_assignment_tx(
    uuid, uuid, text, boolean, uuid, public.booking_status) FROM authenticated, service_role;
GRANT EXECUTE ON FUNCTION public.confirm_hold_assignment_tx(
    uuid, uuid, text, boolean, uuid, public.booking_status)
    TO PUBLIC, anon, authenticated, service_role;

-- The cache and its grants go. Its foreign keys make the drop lock bookings and restaurants
-- too: the runner takes those, allocations and the cache first, in the application's order
-- (manifest.toml, application_order), and exports the cache's rows (down.export) in this
-- same transaction, so a booking half-way through is waited for, never deadlocked with.
DROP TABLE public.booking_confirmation_results;

-- From here to COMMIT, allocations is locked ACCESS EXCLUSIVE. A row written between the
-- check above and this lock could still conflict: the same refusal covers it.
DO $restore$
BEGIN
    ALTER TABLE public.allocations
        DROP CONSTRAINT allocations_no_overlap,
        ADD CONSTRAINT allocations_resource_window_excl EXCLUDE USING gist (
            resource_type WITH =, resource_id WITH =, "window" WITH &&
        ) DEFERRABLE INITIALLY DEFERRED;
EXCEPTION WHEN exclusion_violation THEN
    RAISE EXCEPTION 'rollback refused: allocations overlap under the restored constraint allocations_resource_window_excl (%)', SQLERRM
        USING ERRCODE = 'RB001',
              HINT = 'list them with sql/migrations/20251113203000_capacity_overlap_and_confirm_cache/checks/down_conflicts.sql; resolve them or keep the migration';
END
$restore$;

COMMIT;
