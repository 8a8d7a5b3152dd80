-- assign_tables_atomic_v2: one allocation per table, plus one merge_group allocation for a
-- multi-table booking. A conflict (unique or exclusion) raised inside the call becomes
-- P0001 'allocations_no_overlap'. While the exclusion constraint is INITIALLY DEFERRED
-- (before the migration) an overlap is only found at COMMIT, as a raw 23P01.
CREATE FUNCTION public.assign_tables_atomic_v2(
    p_booking_id        uuid,
    p_table_ids         uuid[],
    p_idempotency_key   text,
    p_require_adjacency boolean DEFAULT false,
    p_assigned_by       uuid DEFAULT NULL,
    p_start_at          timestamptz DEFAULT NULL,
    p_end_at            timestamptz DEFAULT NULL
) RETURNS TABLE (table_id uuid, start_at timestamptz, end_at timestamptz, merge_group_id uuid)
    LANGUAGE plpgsql
AS $$
#variable_conflict use_column
DECLARE
    v_booking        public.bookings%ROWTYPE;
    v_table_ids      uuid[];
    v_window         tstzrange;
    v_checksum       text;
    v_known_checksum text;
    v_merge_group_id uuid;
BEGIN
    SELECT * INTO v_booking FROM public.bookings b WHERE b.id = p_booking_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'booking_not_found' USING ERRCODE = 'P0002',
            DETAIL = format('booking %s does not exist', p_booking_id);
    END IF;

    SELECT array_agg(DISTINCT t ORDER BY t) INTO v_table_ids FROM unnest(p_table_ids) AS t;
    IF v_table_ids IS NULL THEN
        RAISE EXCEPTION 'no_tables_given' USING ERRCODE = '22023';
    END IF;

    v_window := tstzrange(coalesce(p_start_at, v_booking.start_at),
                          coalesce(p_end_at, v_booking.end_at), '[)');
    v_checksum := md5(array_to_string(v_table_ids, ',') || '|' || v_window::text);

    -- A repeated call with the same key and payload returns what the first one assigned.
    SELECT i.payload_checksum INTO v_known_checksum
      FROM public.booking_assignment_idempotency i
     WHERE i.booking_id = p_booking_id AND i.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        IF v_known_checksum <> v_checksum THEN
            RAISE EXCEPTION 'assignment_idempotency_mismatch' USING ERRCODE = 'P0001',
                DETAIL = 'the idempotency key was used before with other tables or another window';
        END IF;
        RETURN QUERY
            SELECT a.table_id, lower(v_window), upper(v_window), a.merge_group_id
              FROM public.booking_table_assignments a
             WHERE a.booking_id = p_booking_id AND a.idempotency_key = p_idempotency_key
             ORDER BY a.table_id;
        RETURN;
    END IF;

    IF (SELECT count(*) FROM public.table_inventory t
         WHERE t.id = ANY (v_table_ids) AND t.restaurant_id = v_booking.restaurant_id)
       <> cardinality(v_table_ids) THEN
        RAISE EXCEPTION 'table_not_in_restaurant' USING ERRCODE = 'P0001',
            DETAIL = 'every table must exist and belong to the booking''s restaurant';
    END IF;

    IF p_require_adjacency AND (SELECT count(DISTINCT t.zone_id) FROM public.table_inventory t
                                 WHERE t.id = ANY (v_table_ids)) > 1 THEN
        RAISE EXCEPTION 'tables_not_adjacent' USING ERRCODE = 'P0001',
            DETAIL = 'adjacency was required and the tables span more than one zone';
    END IF;

    IF cardinality(v_table_ids) > 1 THEN
        v_merge_group_id := gen_random_uuid();
    END IF;

    BEGIN
        INSERT INTO public.allocations (booking_id, restaurant_id, resource_type, resource_id, "window")
        SELECT p_booking_id, v_booking.restaurant_id, 'table', t, v_window
          FROM unnest(v_table_ids) AS t;

        IF v_merge_group_id IS NOT NULL THEN
            INSERT INTO public.allocations (booking_id, restaurant_id, resource_type, resource_id, "window")
            VALUES (p_booking_id, v_booking.restaurant_id, 'merge_group', v_merge_group_id, v_window);
        END IF;

        INSERT INTO public.booking_table_assignments
               (booking_id, table_id, assigned_by, idempotency_key, merge_group_id)
        SELECT p_booking_id, t, p_assigned_by, p_idempotency_key, v_merge_group_id
          FROM unnest(v_table_ids) AS t;
    EXCEPTION WHEN unique_violation OR exclusion_violation THEN
        RAISE EXCEPTION 'allocations_no_overlap' USING ERRCODE = 'P0001', DETAIL = SQLERRM;
    END;

    INSERT INTO public.booking_assignment_idempotency (booking_id, idempotency_key, payload_checksum)
    VALUES (p_booking_id, p_idempotency_key, v_checksum);

    RETURN QUERY
        SELECT t, lower(v_window), upper(v_window), v_merge_group_id
          FROM unnest(v_table_ids) AS t
         ORDER BY t;
END
$$;

-- confirm_hold_assignment_tx, as it is before the migration: lock the hold, check it,
-- assign its tables, optionally move the booking on, delete the hold.
CREATE FUNCTION public.confirm_hold_assignment_tx(
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
