-- Every table has RLS on: anon and authenticated hold grants on everything (Supabase's
-- defaults), so RLS is what keeps them out. Signed-in users see their tenant's rows.
DO $rls$
DECLARE
    v_table text;
BEGIN
    FOREACH v_table IN ARRAY ARRAY[
        'restaurants', 'zones', 'table_inventory', 'bookings', 'table_holds',
        'table_hold_members', 'booking_table_assignments', 'booking_assignment_idempotency',
        'allocations', 'capacity_outbox']
    LOOP
        EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', v_table);
    END LOOP;

    FOREACH v_table IN ARRAY ARRAY[
        'zones', 'table_inventory', 'bookings', 'table_holds', 'allocations', 'capacity_outbox']
    LOOP
        EXECUTE format(
            'CREATE POLICY %I ON public.%I TO authenticated'
            ' USING (restaurant_id = public.require_restaurant_context())'
            ' WITH CHECK (restaurant_id = public.require_restaurant_context())',
            v_table || '_tenant', v_table);
    END LOOP;
END
$rls$;

CREATE POLICY restaurants_tenant ON public.restaurants TO authenticated
    USING (id = public.require_restaurant_context());
