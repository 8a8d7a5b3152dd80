-- Demo and test data for the booking schema, generated set-based in one transaction.
--
-- Deterministic: the same seed, size and anchor date give the same rows on any server
-- (ids from md5, "random" draws from hashint8extended, which hash partitioning keeps
-- stable across PostgreSQL versions). Settings read here, set by rollout.seed:
--   rollout_seed.allocations  total allocations to create (exactly)
--   rollout_seed.seed         integer seed
--   rollout_seed.anchor       date the 90 days are laid around (30 days before, 60 after)
-- References are unique by construction (a prefix and the row's key in hex).
-- Every allocation satisfies the pre-migration constraint (no overlap on a resource, shadow
-- or not), so this data loads on the baseline. Each `-- step:` runs as its own statement.

-- step: helpers
CREATE FUNCTION pg_temp.draw(p_salt int, p_key bigint) RETURNS float8
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT (hashint8extended(p_key, current_setting('rollout_seed.seed')::bigint * 1000 + p_salt)
              & 2147483647)::float8 / 2147483648 $$;
CREATE FUNCTION pg_temp.uid(p_kind text, p_key bigint) RETURNS uuid
    LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT md5(current_setting('rollout_seed.seed') || ':' || p_kind || ':' || p_key)::uuid $$;
-- RETURNS TABLE so the planner inlines it into the query (a record-returning call is not).
CREATE FUNCTION pg_temp.slot_window(p_day date, p_slot int, p_timezone text, p_key bigint)
    RETURNS TABLE (start_at timestamptz, end_at timestamptz)
    LANGUAGE sql STABLE PARALLEL SAFE ROWS 1
AS $$
    -- Slot p_slot of a day is 11:00 + 2 h × slot, local time. A party starts 0, 15 or 30
    -- minutes into it and stays 60, 75 or 90 minutes: it never runs into the next slot.
    SELECT w.s, w.s + make_interval(mins => 60 + 15 * floor(pg_temp.draw(13, p_key) * 3)::int)
      FROM (SELECT ((p_day + make_interval(hours => 11 + 2 * p_slot,
                                           mins => 15 * floor(pg_temp.draw(12, p_key) * 3)::int))
                    AT TIME ZONE p_timezone) AS s) AS w
$$;
CREATE TEMPORARY TABLE seed_params ON COMMIT DROP AS
SELECT n AS allocations,
       round(n * 0.05)::bigint AS shadow_target,
       n - round(n * 0.05)::bigint AS real_target,
       -- about 4,000 real allocations fit one restaurant's 12 tables over 90 days at ~80 %
       greatest(3, ceil((n - round(n * 0.05)) / 4000.0))::int AS restaurants,
       current_setting('rollout_seed.anchor')::date AS anchor
  FROM (SELECT current_setting('rollout_seed.allocations')::bigint AS n) AS s;

-- step: set indexes and constraints aside
-- Bulk load the way pg_restore does: rows first, then indexes, then constraints. Row by
-- row, the allocations GiST indexes and the foreign-key triggers cost several times what
-- building them once costs. The definitions are read from the catalog and put back
-- verbatim (same names, same DEFERRABLE modes), so the schema ends exactly as it began.
CREATE TEMPORARY TABLE seed_set_aside ON COMMIT DROP AS
WITH seeded (rel) AS (
    SELECT format('public.%I', t)::regclass
      FROM unnest(ARRAY['restaurants', 'zones', 'table_inventory', 'bookings', 'table_holds',
                        'table_hold_members', 'booking_table_assignments',
                        'booking_assignment_idempotency', 'allocations', 'capacity_outbox']) AS t
)
SELECT 1 AS phase, con.conrelid::regclass::text AS rel, con.conname::text AS name,
       pg_get_constraintdef(con.oid) AS definition
  FROM pg_constraint con
 WHERE con.contype = 'f'
   AND (con.conrelid IN (SELECT rel FROM seeded) OR con.confrelid IN (SELECT rel FROM seeded))
UNION ALL
SELECT 2, con.conrelid::regclass::text, con.conname::text, pg_get_constraintdef(con.oid)
  FROM pg_constraint con
 WHERE con.contype IN ('p', 'u', 'x') AND con.conrelid IN (SELECT rel FROM seeded)
UNION ALL
SELECT 3, i.indrelid::regclass::text, c.relname::text, pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
 WHERE i.indrelid IN (SELECT rel FROM seeded)
   AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid
                                                     AND con.contype IN ('p', 'u', 'x'));

DO $set_aside$
DECLARE
    v record;
BEGIN
    FOR v IN SELECT * FROM seed_set_aside ORDER BY phase, rel, name LOOP
        IF v.phase < 3 THEN
            EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', v.rel, v.name);
        ELSE
            EXECUTE format('DROP INDEX public.%I', v.name);
        END IF;
    END LOOP;
END
$set_aside$;

-- step: restaurants, zones and tables
INSERT INTO public.restaurants (id, name, slug, timezone, created_at)
SELECT pg_temp.uid('restaurant', r), format('Restaurant %s', r + 1), format('restaurant-%s', r + 1),
       (ARRAY['Europe/London', 'Europe/Paris', 'America/New_York', 'America/Los_Angeles',
              'Asia/Tokyo', 'Australia/Sydney', 'Asia/Kolkata'])[r % 7 + 1],
       p.anchor - 365
  FROM seed_params p, generate_series(0, p.restaurants - 1) AS r;

INSERT INTO public.zones (id, restaurant_id, name, created_at)
SELECT pg_temp.uid('zone', r * 3 + z), pg_temp.uid('restaurant', r),
       (ARRAY['Main', 'Terrace', 'Bar'])[z + 1], p.anchor - 365
  FROM seed_params p, generate_series(0, p.restaurants - 1) AS r, generate_series(0, 2) AS z;

-- 12 tables a restaurant, 4 a zone; tables 2k and 2k+1 stand side by side (same zone).
INSERT INTO public.table_inventory (id, restaurant_id, table_number, capacity, zone_id, created_at)
SELECT pg_temp.uid('table', r * 12 + t), pg_temp.uid('restaurant', r), format('T%s', t + 1),
       (ARRAY[2, 2, 4, 4, 2, 6])[t % 6 + 1], pg_temp.uid('zone', r * 3 + t / 4), p.anchor - 365
  FROM seed_params p, generate_series(0, p.restaurants - 1) AS r, generate_series(0, 11) AS t;

-- step: bookings
-- A cell is (restaurant, table pair, day, slot); slots start 11:00, 13:00 … 21:00 local and
-- a party fits inside its slot (slot_window), so bookings on one table never overlap. In a
-- cell either both tables take one party (a merge group) or each table takes its own
-- booking, or stays free.
CREATE TEMPORARY TABLE seed_candidates ON COMMIT DROP AS
WITH cells AS (
    SELECT ((r * 6 + pr) * 90 + d) * 6 + s AS cell, r, pr, d, s
      FROM seed_params p, generate_series(0, p.restaurants - 1) AS r,
           generate_series(0, 5) AS pr, generate_series(0, 89) AS d, generate_series(0, 5) AS s
), parts AS (
    SELECT c.*, w.which
      FROM cells c
      CROSS JOIN LATERAL (
          SELECT 2 AS which WHERE pg_temp.draw(1, c.cell) < 0.08
          UNION ALL
          SELECT x FROM (VALUES (0, 2), (1, 3)) AS v (x, salt)
           WHERE pg_temp.draw(1, c.cell) >= 0.08 AND pg_temp.draw(v.salt, c.cell) < 0.72
      ) AS w
)
SELECT cell * 3 + which AS booking_key, cell, r, pr, d, s, which,
       CASE WHEN which = 2 THEN 3 ELSE 1 END AS allocation_count,
       pg_temp.draw(4, cell * 3 + which) AS priority
  FROM parts;

CREATE TEMPORARY TABLE seed_bookings ON COMMIT DROP AS
SELECT c.*, pg_temp.uid('booking', c.booking_key) AS booking_id
  FROM (SELECT c.*, sum(c.allocation_count) OVER (ORDER BY c.priority, c.booking_key) AS running
          FROM seed_candidates c) AS c, seed_params p
 WHERE c.running <= p.real_target;

INSERT INTO public.bookings (id, restaurant_id, start_at, end_at, party_size, status, reference,
                             idempotency_key, created_at, updated_at)
SELECT b.booking_id, pg_temp.uid('restaurant', b.r), t.start_at, t.end_at,
       CASE WHEN b.which = 2 THEN 5 + (b.booking_key % 4)::int ELSE 2 + (b.booking_key % 3)::int END,
       CASE WHEN b.d < 30 THEN
                CASE WHEN pg_temp.draw(5, b.booking_key) < 0.93 THEN 'completed' ELSE 'no_show' END
            ELSE CASE WHEN pg_temp.draw(5, b.booking_key) < 0.95 THEN 'confirmed' ELSE 'seated' END
       END::public.booking_status,
       'BK' || upper(lpad(to_hex(b.booking_key), 10, '0')), 'seed-' || b.booking_key,
       t.start_at - interval '7 days', t.start_at - interval '7 days'
  FROM seed_bookings b
  JOIN public.restaurants rest ON rest.id = pg_temp.uid('restaurant', b.r)
 CROSS JOIN seed_params p
 CROSS JOIN LATERAL pg_temp.slot_window(p.anchor - 30 + b.d, b.s, rest.timezone, b.booking_key) AS t;

-- Cancelled bookings hold no tables: about 3 % more bookings, without allocations.
INSERT INTO public.bookings (id, restaurant_id, start_at, end_at, party_size, status, reference,
                             idempotency_key, created_at, updated_at)
SELECT pg_temp.uid('cancelled', b.booking_key), bk.restaurant_id, bk.start_at, bk.end_at,
       bk.party_size, 'cancelled', 'CX' || upper(lpad(to_hex(b.booking_key), 10, '0')),
       'seed-cancelled-' || b.booking_key, bk.created_at, bk.created_at
  FROM seed_bookings b JOIN public.bookings bk ON bk.id = b.booking_id
 WHERE pg_temp.draw(6, b.booking_key) < 0.03;

-- step: assignments and allocations
INSERT INTO public.booking_table_assignments (id, booking_id, table_id, idempotency_key,
                                              merge_group_id, created_at)
SELECT pg_temp.uid('assignment', b.booking_key * 2 + tt.k), b.booking_id,
       pg_temp.uid('table', b.r * 12 + b.pr * 2 + tt.k), 'seed-' || b.booking_key,
       CASE WHEN b.which = 2 THEN pg_temp.uid('merge', b.booking_key) END, bk.created_at
  FROM seed_bookings b
  JOIN public.bookings bk ON bk.id = b.booking_id
  CROSS JOIN LATERAL (SELECT b.which AS k WHERE b.which < 2
                      UNION ALL SELECT k FROM generate_series(0, 1) AS k WHERE b.which = 2) AS tt;

INSERT INTO public.booking_assignment_idempotency (booking_id, idempotency_key, payload_checksum,
                                                   created_at)
SELECT b.booking_id, 'seed-' || b.booking_key, md5('seed:' || b.booking_key), bk.created_at
  FROM seed_bookings b JOIN public.bookings bk ON bk.id = b.booking_id;

INSERT INTO public.allocations (id, booking_id, restaurant_id, resource_type, resource_id,
                                "window", shadow, created_at, updated_at)
SELECT pg_temp.uid('allocation', a.key), a.booking_id, a.restaurant_id, a.resource_type,
       a.resource_id, tstzrange(bk.start_at, bk.end_at, '[)'), false, bk.created_at, bk.created_at
  FROM (
      SELECT b.booking_key * 3 + tt.k AS key, b.booking_id, pg_temp.uid('restaurant', b.r) AS restaurant_id,
             CASE WHEN tt.k = 2 THEN 'merge_group' ELSE 'table' END AS resource_type,
             CASE WHEN tt.k = 2 THEN pg_temp.uid('merge', b.booking_key)
                  ELSE pg_temp.uid('table', b.r * 12 + b.pr * 2 + tt.k) END AS resource_id
        FROM seed_bookings b
        CROSS JOIN LATERAL (SELECT b.which AS k WHERE b.which < 2
                            UNION ALL SELECT k FROM generate_series(0, 2) AS k WHERE b.which = 2) AS tt
  ) AS a
  JOIN public.bookings bk ON bk.id = a.booking_id
 ORDER BY a.resource_type, a.resource_id, bk.start_at;

-- step: holds and shadow allocations
-- Holds sit on free table slots (a shadow may not overlap anything before the migration).
-- About 40 % are live (they expire 30 days after the anchor); half carry a pending booking.
CREATE TEMPORARY TABLE seed_holds ON COMMIT DROP AS
WITH free_slots AS (
    SELECT c.cell * 2 + k AS slot_key, c.cell, c.r, c.pr, c.d, c.s, k
      FROM (SELECT DISTINCT cell, r, pr, d, s FROM seed_candidates) AS c
      CROSS JOIN generate_series(0, 1) AS k
     WHERE NOT EXISTS (SELECT 1 FROM seed_bookings b
                        WHERE b.cell = c.cell AND (b.which = 2 OR b.which = k))
)
SELECT f.*, pg_temp.uid('hold', f.slot_key) AS hold_id,
       CASE WHEN pg_temp.draw(7, f.slot_key) < 0.5 THEN pg_temp.uid('hold-booking', f.slot_key) END
           AS booking_id,
       pg_temp.draw(8, f.slot_key) < 0.4 AS live
  FROM free_slots f, seed_params p
 ORDER BY pg_temp.draw(9, f.slot_key), f.slot_key
 LIMIT (SELECT p.allocations - (SELECT coalesce(sum(allocation_count), 0) FROM seed_bookings)
          FROM seed_params p);

INSERT INTO public.bookings (id, restaurant_id, start_at, end_at, party_size, status, reference,
                             idempotency_key, created_at, updated_at)
SELECT h.booking_id, pg_temp.uid('restaurant', h.r), t.start_at, t.end_at,
       2, 'pending', 'HB' || upper(lpad(to_hex(h.slot_key), 10, '0')), 'seed-hold-' || h.slot_key,
       p.anchor::timestamptz, p.anchor::timestamptz
  FROM seed_holds h
  JOIN public.restaurants rest ON rest.id = pg_temp.uid('restaurant', h.r)
 CROSS JOIN seed_params p
 CROSS JOIN LATERAL pg_temp.slot_window(p.anchor - 30 + h.d, h.s, rest.timezone, -h.slot_key) AS t
 WHERE h.booking_id IS NOT NULL;

INSERT INTO public.table_holds (id, restaurant_id, booking_id, zone_id, start_at, end_at,
                                expires_at, metadata, created_at)
SELECT h.hold_id, pg_temp.uid('restaurant', h.r), h.booking_id, pg_temp.uid('zone', h.r * 3 + h.pr / 2),
       t.start_at, t.end_at,
       CASE WHEN h.live THEN p.anchor + 30 ELSE p.anchor - 1 END::timestamptz,
       jsonb_build_object('source', 'seed'), p.anchor::timestamptz
  FROM seed_holds h
  JOIN public.restaurants rest ON rest.id = pg_temp.uid('restaurant', h.r)
 CROSS JOIN seed_params p
 CROSS JOIN LATERAL pg_temp.slot_window(p.anchor - 30 + h.d, h.s, rest.timezone, -h.slot_key) AS t;

INSERT INTO public.table_hold_members (hold_id, table_id)
SELECT h.hold_id, pg_temp.uid('table', h.r * 12 + h.pr * 2 + h.k) FROM seed_holds h;

INSERT INTO public.allocations (id, booking_id, restaurant_id, resource_type, resource_id,
                                "window", shadow, created_at, updated_at)
SELECT pg_temp.uid('shadow', h.slot_key), h.booking_id, th.restaurant_id, 'table',
       pg_temp.uid('table', h.r * 12 + h.pr * 2 + h.k), tstzrange(th.start_at, th.end_at, '[)'),
       true, th.created_at, th.created_at
  FROM seed_holds h JOIN public.table_holds th ON th.id = h.hold_id
 ORDER BY 5, th.start_at;

-- step: outbox
-- Roughly one event for every five bookings, mostly delivered.
INSERT INTO public.capacity_outbox (id, status, event_type, dedupe_key, restaurant_id, booking_id,
                                    idempotency_key, payload, attempt_count, next_attempt_at,
                                    created_at)
SELECT pg_temp.uid('outbox', b.booking_key),
       CASE WHEN x < 0.90 THEN 'done' WHEN x < 0.97 THEN 'pending' WHEN x < 0.99 THEN 'processing'
            ELSE 'dead' END,
       CASE WHEN b.booking_key % 2 = 0 THEN 'booking.created' ELSE 'capacity.assignment.sync' END,
       'seed:' || b.booking_key, bk.restaurant_id, b.booking_id, 'seed-' || b.booking_key,
       jsonb_build_object('booking_id', b.booking_id, 'reference', bk.reference),
       CASE WHEN x < 0.97 THEN 1 ELSE 5 END, bk.created_at, bk.created_at
  FROM seed_bookings b
  JOIN public.bookings bk ON bk.id = b.booking_id
 CROSS JOIN LATERAL (SELECT pg_temp.draw(10, b.booking_key) AS x) AS dx
 WHERE pg_temp.draw(11, b.booking_key) < 0.2;

-- step: analyze
-- Statistics first: validating the foreign keys plans a join over these tables.
ANALYZE public.restaurants, public.zones, public.table_inventory, public.bookings,
        public.table_holds, public.table_hold_members, public.booking_table_assignments,
        public.booking_assignment_idempotency, public.allocations, public.capacity_outbox;

-- step: rebuild indexes and constraints
DO $put_back$
DECLARE
    v       record;
    v_start timestamptz;
BEGIN
    FOR v IN SELECT * FROM seed_set_aside ORDER BY phase DESC, rel, name LOOP
        v_start := clock_timestamp();
        IF v.phase < 3 THEN
            EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I %s', v.rel, v.name, v.definition);
        ELSE
            EXECUTE v.definition;
        END IF;
        IF clock_timestamp() - v_start > interval '1 second' THEN  -- the slow ones, as progress
            RAISE NOTICE 'rebuilt %.% in % s', v.rel, v.name,
                round(extract(epoch FROM clock_timestamp() - v_start)::numeric, 1);
        END IF;
    END LOOP;
END
$put_back$;
