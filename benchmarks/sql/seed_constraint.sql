-- The constraint as the seed (the origin's migration) writes it: tenant first, window last.
ALTER TABLE public.allocations
    DROP CONSTRAINT IF EXISTS allocations_resource_window_excl,
    DROP CONSTRAINT IF EXISTS allocations_no_overlap,
    ADD CONSTRAINT allocations_no_overlap EXCLUDE USING gist (
        restaurant_id WITH =, resource_type WITH =, resource_id WITH =, "window" WITH &&
    ) WHERE (NOT shadow) DEFERRABLE INITIALLY IMMEDIATE;
