-- 20251113203000_capacity_overlap_and_confirm_cache — up
--
-- One transaction. Every statement that does not touch public.allocations comes first:
-- the constraint swap at the end takes ACCESS EXCLUSIVE on allocations (reads blocked
-- too) and holds it to COMMIT, so nothing else may run after it.
BEGIN;

CREATE EXTENSION IF NOT EXISTS btree_gist WITH SCHEMA public;

-- The confirmation cache: the first result of a confirm, returned again on replay.
CREATE TABLE public.booking_confirmation_results (
    booking_id         uuid NOT NULL REFERENCES public.bookings (id) ON DELETE CASCADE,
    hold_id            uuid NOT NULL,
    restaurant_id      uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
    idempotency_key    text NOT NULL,
    table_ids          uuid[] NOT NULL,
    assignment_window  tstzrange NOT NULL,
    created_at         timestamptz NOT NULL DEFAULT now(),
    actor_id           uuid,
    metadata           jsonb NOT NULL DEFAULT '{}'::jsonb,
    CONSTRAINT booking_confirmation_results_pkey PRIMARY KEY (booking_id, idempotency_key),
    -- Its index is the hold_id index: a second plain one would only cost writes.
    CONSTRAINT booking_confirmation_results_hold_id_key UNIQUE (hold_id)
);
CREATE INDEX booking_confirmation_results_created_at_idx
    ON public.booking_confirmation_results (created_at);

-- service_role bypasses RLS (BYPASSRLS); the policy is for signed-in users, and anon
-- gets no grant at all.
ALTER TABLE public.booking_confirmation_results ENABLE ROW LEVEL SECURITY;
CREATE POLICY booking_confirmation_results_tenant ON public.booking_confirmation_results
    TO authenticated
    USING (restaurant_id = public.require_restaurant_context())
    WITH CHECK (restaurant_id = public.require_restaurant_context());
-- Supabase's default privileges give every API role ALL on a new table; RLS does not cover
-- all of it. TRUNCATE ignores RLS (one tenant's session would empty every tenant's cache),
-- a trigger attached by `authenticated` would run as the owner whenever the SECURITY DEFINER
-- confirm writes here, and REFERENCES lets a foreign key probe the rows. So everything the
-- defaults gave is taken back and only what each role needs is granted, whatever the
-- target's defaults are: `authenticated` reads and writes rows (RLS decides which),
-- `service_role` keeps what Supabase gives it (ALL: it is the trusted server-side role).
REVOKE ALL ON public.booking_confirmation_results FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.booking_confirmation_results TO authenticated;
GRANT ALL ON public.booking_confirmation_results TO service_role;

-- Same signature and result as before. New: the replay of a (booking, key) returns the
-- cached first result and writes nothing, the confirm emits outbox events, and a caller
-- that RLS binds to a tenant confirms (and replays) only that tenant's holds.
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
    v_cached    public.booking_confirmation_results%ROWTYPE;
    v_table_ids uuid[];
    v_merge_id  uuid;
    v_caller    text;
    v_tenant    uuid;  -- the caller's tenant; NULL when the caller sees every tenant's rows
BEGIN
    -- Who is calling. This function runs as its owner (SECURITY DEFINER), so current_user
    -- is the owner here, never the caller. The caller is the role the session acts as
    -- outside the function: the `role` setting a SET ROLE leaves ('none' when there was
    -- none; PostgREST sets it to the JWT's role), else session_user, the role that logged
    -- in. That is how PostgreSQL itself derives current_user outside a definer function.
    -- It cannot be forged from inside: the `role` setting accepts only roles the session
    -- user may SET ROLE to (so a caller can claim no more than it could act as directly),
    -- and it cannot be changed while a SECURITY DEFINER function runs.
    v_caller := CASE current_setting('role') WHEN 'none' THEN session_user
                ELSE current_setting('role') END;
    -- The function acts with the owner's rights; the tenant check stops it lending them
    -- to a caller who lacks them. A caller who already sees every tenant's rows gains
    -- nothing and is not bound: a superuser, a BYPASSRLS role (service_role; postgres, the
    -- owner that the benchmarks' writers and the assignment suite connect as) or a role
    -- with the owner's privileges (it owns the tables, so RLS does not bind it). Anyone
    -- else (authenticated) is bound to the tenant context, as RLS binds it: no context
    -- is 42501 (require_restaurant_context), and an unknown caller is bound (fails closed).
    IF NOT coalesce((SELECT r.rolsuper OR r.rolbypassrls
                                OR pg_has_role(r.oid, current_user, 'USAGE')
                       FROM pg_roles r WHERE r.rolname = v_caller), false) THEN
        v_tenant := public.require_restaurant_context();
        -- Checked before the cache is read: a (booking, key) of another tenant, or one
        -- that does not exist, gets the same refusal and none of the cached result.
        IF NOT EXISTS (SELECT 1 FROM public.bookings b
                        WHERE b.id = p_booking_id AND b.restaurant_id = v_tenant) THEN
            RAISE EXCEPTION 'booking_not_in_restaurant' USING ERRCODE = '42501',
                DETAIL = format('booking %s is not a booking of the restaurant in context (%s)',
                                p_booking_id, v_tenant);
        END IF;
    END IF;

    SELECT * INTO v_cached FROM public.booking_confirmation_results c
     WHERE c.booking_id = p_booking_id AND c.idempotency_key = p_idempotency_key
       AND (v_tenant IS NULL OR c.restaurant_id = v_tenant);

    IF NOT FOUND THEN
        -- A concurrent confirm of the same hold waits here until the first one commits.
        SELECT * INTO v_hold FROM public.table_holds h WHERE h.id = p_hold_id FOR UPDATE;
        IF NOT FOUND THEN
            -- The hold is gone: either a confirm with this key consumed it (return its
            -- result), or one with another key did (refuse), or it never existed.
            SELECT * INTO v_cached FROM public.booking_confirmation_results c
             WHERE c.booking_id = p_booking_id AND c.idempotency_key = p_idempotency_key
               AND (v_tenant IS NULL OR c.restaurant_id = v_tenant);
            IF NOT FOUND THEN
                IF EXISTS (SELECT 1 FROM public.booking_confirmation_results c
                            WHERE c.hold_id = p_hold_id
                              AND (v_tenant IS NULL OR c.restaurant_id = v_tenant)) THEN
                    RAISE EXCEPTION 'hold_already_confirmed' USING ERRCODE = 'P0001',
                        DETAIL = format('hold %s was confirmed with another idempotency key', p_hold_id);
                END IF;
                RAISE EXCEPTION 'hold_not_found' USING ERRCODE = 'P0002',
                    DETAIL = format('hold %s does not exist', p_hold_id);
            END IF;
        ELSIF v_hold.restaurant_id <> v_tenant THEN  -- NULL, so never, when not bound
            -- Refused before anything about the hold (its booking, expiry) is told.
            RAISE EXCEPTION 'hold_not_in_restaurant' USING ERRCODE = '42501',
                DETAIL = format('hold %s is not a hold of the restaurant in context (%s)',
                                p_hold_id, v_tenant);
        END IF;
    END IF;

    IF v_cached.booking_id IS NULL THEN
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

        -- The hold's own tentative allocations end with the hold.
        DELETE FROM public.allocations a
         WHERE a.shadow
           AND a.restaurant_id = v_hold.restaurant_id
           AND a.resource_type = 'table'
           AND a.resource_id = ANY (v_table_ids)
           AND a."window" = tstzrange(v_hold.start_at, v_hold.end_at, '[)');

        SELECT max(r.merge_group_id::text)::uuid INTO v_merge_id
          FROM public.assign_tables_atomic_v2(
                   p_booking_id, v_table_ids, p_idempotency_key, p_require_adjacency,
                   p_assigned_by, v_hold.start_at, v_hold.end_at) AS r;

        INSERT INTO public.booking_confirmation_results
               (booking_id, hold_id, restaurant_id, idempotency_key, table_ids,
                assignment_window, actor_id, metadata)
        VALUES (p_booking_id, p_hold_id, v_hold.restaurant_id, p_idempotency_key, v_table_ids,
                tstzrange(v_hold.start_at, v_hold.end_at, '[)'), p_assigned_by,
                jsonb_build_object('merge_group_id', v_merge_id, 'target_status', p_target_status))
        RETURNING * INTO v_cached;

        IF p_target_status IS NOT NULL THEN
            UPDATE public.bookings b SET status = p_target_status, updated_at = now()
             WHERE b.id = p_booking_id;
        END IF;

        -- Outbox events are best effort: a database without the outbox still confirms.
        IF to_regclass('public.capacity_outbox') IS NOT NULL THEN
            INSERT INTO public.capacity_outbox
                   (event_type, dedupe_key, restaurant_id, booking_id, idempotency_key, payload)
            SELECT e.event_type, e.event_type || ':' || p_booking_id || ':' || p_idempotency_key,
                   v_hold.restaurant_id, p_booking_id, p_idempotency_key,
                   jsonb_build_object('hold_id', p_hold_id, 'table_ids', to_jsonb(v_table_ids),
                                      'start_at', v_hold.start_at, 'end_at', v_hold.end_at,
                                      'merge_group_id', v_merge_id)
              FROM (VALUES ('capacity.assignment.sync'), ('capacity.hold.confirmed')) AS e (event_type);
        END IF;

        DELETE FROM public.table_holds h WHERE h.id = p_hold_id;
    END IF;

    RETURN QUERY
        SELECT t, lower(v_cached.assignment_window), upper(v_cached.assignment_window),
               (v_cached.metadata ->> 'merge_group_id')::uuid
          FROM unnest(v_cached.table_ids) AS t
         ORDER BY t;
END
$$;

-- Functions in public get EXECUTE for PUBLIC (PostgreSQL's default) and for every API role
-- (Supabase's default privileges), and PostgREST serves each function anon may execute as
-- an RPC to anyone holding the project's public anon key. This one writes as its owner:
-- signed-in users (bound to their tenant above) and service_role keep it, nobody else.
REVOKE EXECUTE ON FUNCTION public.confirm_hold_assignment_tx(
    uuid, uuid, text, boolean, uuid, public.booking_status) FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.confirm_hold_assignment_tx(
    uuid, uuid, text, boolean, uuid, public.booking_status) TO authenticated, service_role;

-- From here to COMMIT, allocations is locked ACCESS EXCLUSIVE. The new constraint only
-- removes conflicts (tenant column added, shadows excluded), so existing data satisfies
-- it; it is DEFERRABLE INITIALLY IMMEDIATE: conflicts surface at the INSERT.
-- The key order is the seed's columns reordered; what the constraint forbids does not depend on
-- it, how long the lock is held does: GiST splits its pages on the first column that tells rows
-- apart, so the resource first (thousands of values) and its window next give tight pages, and
-- each row's exclusion check, one index probe per row under the lock, reads few of them. At 1M
-- allocations the build takes 0.4x the seed's order's time (benchmarks/README.md).
ALTER TABLE public.allocations
    DROP CONSTRAINT IF EXISTS allocations_resource_window_excl,
    DROP CONSTRAINT IF EXISTS allocations_no_overlap,
    ADD CONSTRAINT allocations_no_overlap EXCLUDE USING gist (
        resource_id WITH =, "window" WITH &&, restaurant_id WITH =, resource_type WITH =
    ) WHERE (NOT shadow) DEFERRABLE INITIALLY IMMEDIATE;

-- allocations_resource_window_idx stays. domain.md calls it redundant beside the new
-- constraint's index, but that index is partial (WHERE NOT shadow): queries that must also
-- see holds' shadow allocations (availability, a restaurant's day view) lose their index
-- without it and scan the table; measured 62x slower at 1M allocations
-- (benchmarks/README.md). Keeping it costs writes what they paid before the migration.

COMMIT;
