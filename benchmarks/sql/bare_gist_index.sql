-- The floor: a plain GiST index on the constraint's columns, in the up's key order, with its
-- predicate; what adding the constraint costs beyond this is the per-row exclusion check.
CREATE INDEX allocations_bench_bare_gist ON public.allocations
    USING gist (resource_id, "window", restaurant_id, resource_type) WHERE (NOT shadow);
