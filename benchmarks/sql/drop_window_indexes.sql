-- A real plan regression for the probes: both GiST indexes on allocations' (resource, window)
-- go (the exclusion constraint's index covers the same columns, so it must go too), and the
-- allocation queries fall back to reading the table.
ALTER TABLE public.allocations DROP CONSTRAINT allocations_resource_window_excl;
DROP INDEX public.allocations_resource_window_idx;
