-- Confirm path: what confirm_hold_assignment_tx reads before it writes — the hold, its member
-- tables and any confirmed allocation colliding with them. Read-only on purpose: the probes
-- also run against production, where a write (even one rolled back) would take row locks.
SELECT h.id, m.table_id, a.id AS colliding_allocation
  FROM public.table_holds AS h
  JOIN public.table_hold_members AS m ON m.hold_id = h.id
  LEFT JOIN public.allocations AS a
         ON a.restaurant_id = h.restaurant_id
        AND a.resource_type = 'table'
        AND a.resource_id = m.table_id
        AND a."window" && tstzrange(h.start_at, h.end_at)
        AND NOT a.shadow
 WHERE h.id = %(hold_id)s::uuid
