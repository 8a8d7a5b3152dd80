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

-- step: settings
-- Memory for this transaction only: the sorts and hashes of a 1M seed stay in memory, and
-- the index builds and foreign-key checks (which run with maintenance_work_mem) too.
SET LOCAL work_mem = '256MB';
SET LOCAL maintenance_work_mem = '512MB';

-- step: helpers
-- The seed goes into the helpers' bodies as a constant: read per call with current_setting,
-- it cost more than the hashing itself. Same values as reading it each time.
DO $helpers$
BEGIN
    EXECUTE format($f$
        CREATE FUNCTION pg_temp.draw(p_salt int, p_key bigint) RETURNS float8
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS 'SELECT (hashint8extended(p_key, %s + p_salt) & 2147483647)::float8 / 2147483648'
    $f$, current_setting('rollout_seed.seed')::bigint * 1000);
    EXECUTE format($f$
        CREATE FUNCTION pg_temp.uid(p_kind text, p_key bigint) RETURNS uuid
            LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS %L
    $f$, format('SELECT md5(%L || p_kind || %L || p_key::text)::uuid',
                current_setting('rollout_seed.seed') || ':', ':'));
END
$helpers$;
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
-- Restaurants and tables by number, to look their ids up rather than hash them on every row.
CREATE TEMPORARY TABLE seed_restaurants ON COMMIT DROP AS
SELECT r, pg_temp.uid('restaurant', r) AS id,
       (ARRAY['Europe/London', 'Europe/Paris', 'America/New_York', 'America/Los_Angeles',
              'Asia/Tokyo', 'Australia/Sydney', 'Asia/Kolkata'])[r % 7 + 1] AS timezone
  FROM seed_params p, generate_series(0, p.restaurants - 1) AS r;
CREATE TEMPORARY TABLE seed_tables ON COMMIT DROP AS
SELECT n AS t, pg_temp.uid('table', n) AS id
  FROM seed_params p, generate_series(0, p.restaurants * 12 - 1) AS n;
ANALYZE seed_restaurants, seed_tables;  -- temporary tables have no statistics otherwise

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
SELECT r.id, format('Restaurant %s', r.r + 1), format('restaurant-%s', r.r + 1), r.timezone,
       p.anchor - 365
  FROM seed_params p, seed_restaurants r
 ORDER BY r.r;

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
-- A cell is (restaurant, table pair, day, slot), numbered ((r × 6 + pair) × 90 + day) × 6 +
-- slot; slots start 11:00, 13:00 … 21:00 local and a party fits inside its slot
-- (slot_window), so bookings on one table never overlap. In a cell either both tables take
-- one party (a merge group, which = 2) or each table takes its own booking (which = the
-- table, 0 or 1), or stays free. Candidates are taken by priority until the real
-- allocations are reached (booked).
CREATE TEMPORARY TABLE seed_candidates ON COMMIT DROP AS
SELECT c.booking_key, c.which,
       sum(c.allocation_count) OVER (ORDER BY c.priority, c.booking_key) <= p.real_target AS booked
  FROM (SELECT cell * 3 + w.which AS booking_key, w.which,
               CASE WHEN w.which = 2 THEN 3 ELSE 1 END AS allocation_count,
               pg_temp.draw(4, cell * 3 + w.which) AS priority
          FROM seed_params p, generate_series(0, p.restaurants * 3240 - 1) AS cell,
               (VALUES (0, 2), (1, 3), (2, NULL)) AS w (which, salt)
         WHERE CASE WHEN w.which = 2 THEN pg_temp.draw(1, cell) < 0.08
                    ELSE pg_temp.draw(1, cell) >= 0.08 AND pg_temp.draw(w.salt, cell) < 0.72 END
       ) AS c, seed_params p;

-- What every table's rows of a booking derive from, computed once.
CREATE TEMPORARY TABLE seed_bookings ON COMMIT DROP AS
SELECT b.booking_key, b.r, b.pr, b.d, b.which, pg_temp.uid('booking', b.booking_key) AS booking_id,
       rest.id AS restaurant_id, t.start_at, t.end_at, t.start_at - interval '7 days' AS created_at
  FROM (SELECT c.booking_key, c.which, c.booking_key / 9720 AS r, c.booking_key / 1620 % 6 AS pr,
               c.booking_key / 18 % 90 AS d, c.booking_key / 3 % 6 AS s
          FROM seed_candidates c WHERE c.booked) AS b
  JOIN seed_restaurants rest ON rest.r = b.r
 CROSS JOIN seed_params p
 CROSS JOIN LATERAL pg_temp.slot_window(p.anchor - 30 + b.d::int, b.s::int, rest.timezone,
                                        b.booking_key) AS t;

INSERT INTO public.bookings (id, restaurant_id, start_at, end_at, party_size, status, reference,
                             idempotency_key, created_at, updated_at)
SELECT b.booking_id, b.restaurant_id, b.start_at, b.end_at,
       CASE WHEN b.which = 2 THEN 5 + (b.booking_key % 4)::int ELSE 2 + (b.booking_key % 3)::int END,
       CASE WHEN b.d < 30 THEN
                CASE WHEN pg_temp.draw(5, b.booking_key) < 0.93 THEN 'completed' ELSE 'no_show' END
            ELSE CASE WHEN pg_temp.draw(5, b.booking_key) < 0.95 THEN 'confirmed' ELSE 'seated' END
       END::public.booking_status,
       'BK' || upper(lpad(to_hex(b.booking_key), 10, '0')), 'seed-' || b.booking_key,
       b.created_at, b.created_at
  FROM seed_bookings b;

-- Cancelled bookings hold no tables: about 3 % more bookings, without allocations.
INSERT INTO public.bookings (id, restaurant_id, start_at, end_at, party_size, status, reference,
                             idempotency_key, created_at, updated_at)
SELECT pg_temp.uid('cancelled', b.booking_key), b.restaurant_id, b.start_at, b.end_at,
       CASE WHEN b.which = 2 THEN 5 + (b.booking_key % 4)::int ELSE 2 + (b.booking_key % 3)::int END,
       'cancelled', 'CX' || upper(lpad(to_hex(b.booking_key), 10, '0')),
       'seed-cancelled-' || b.booking_key, b.created_at, b.created_at
  FROM seed_bookings b
 WHERE pg_temp.draw(6, b.booking_key) < 0.03;

-- step: assignments and allocations
INSERT INTO public.booking_table_assignments (id, booking_id, table_id, idempotency_key,
                                              merge_group_id, created_at)
SELECT pg_temp.uid('assignment', b.booking_key * 2 + tt.k), b.booking_id, tbl.id,
       'seed-' || b.booking_key,
       CASE WHEN b.which = 2 THEN pg_temp.uid('merge', b.booking_key) END, b.created_at
  FROM seed_bookings b
 CROSS JOIN LATERAL (SELECT b.which AS k WHERE b.which < 2
                     UNION ALL SELECT k FROM generate_series(0, 1) AS k WHERE b.which = 2) AS tt
  JOIN seed_tables tbl ON tbl.t = b.r * 12 + b.pr * 2 + tt.k;

INSERT INTO public.booking_assignment_idempotency (booking_id, idempotency_key, payload_checksum,
                                                   created_at)
SELECT b.booking_id, 'seed-' || b.booking_key, md5('seed:' || b.booking_key), b.created_at
  FROM seed_bookings b;

-- In the pre-migration constraint's key order (resource_type, resource_id, start): what a
-- long-lived table clustered on it holds. 'merge_group' sorts before 'table', so the merge
-- groups go first; two inserts sort on the uuid alone, far cheaper than on the type first.
INSERT INTO public.allocations (id, booking_id, restaurant_id, resource_type, resource_id,
                                "window", shadow, created_at, updated_at)
SELECT pg_temp.uid('allocation', b.booking_key * 3 + 2), b.booking_id, b.restaurant_id,
       'merge_group', pg_temp.uid('merge', b.booking_key), tstzrange(b.start_at, b.end_at, '[)'),
       false, b.created_at, b.created_at
  FROM seed_bookings b
 WHERE b.which = 2
 ORDER BY 5, b.start_at;

INSERT INTO public.allocations (id, booking_id, restaurant_id, resource_type, resource_id,
                                "window", shadow, created_at, updated_at)
SELECT pg_temp.uid('allocation', b.booking_key * 3 + tt.k), b.booking_id, b.restaurant_id,
       'table', tbl.id, tstzrange(b.start_at, b.end_at, '[)'), false, b.created_at, b.created_at
  FROM seed_bookings b
 CROSS JOIN LATERAL (SELECT b.which AS k WHERE b.which < 2
                     UNION ALL SELECT k FROM generate_series(0, 1) AS k WHERE b.which = 2) AS tt
  JOIN seed_tables tbl ON tbl.t = b.r * 12 + b.pr * 2 + tt.k
 ORDER BY 5, b.start_at;

-- step: holds and shadow allocations
-- Holds sit on free table slots (a shadow may not overlap anything before the migration):
-- a table of a cell that had a candidate, where no booked candidate took it (or both).
-- About 40 % are live (they expire 30 days after the anchor); half carry a pending booking.
CREATE TEMPORARY TABLE seed_holds ON COMMIT DROP AS
WITH cells AS (
    SELECT booking_key / 3 AS cell, bool_or(booked AND which = 2) AS merged,
           bool_or(booked AND which = 0) AS first_taken, bool_or(booked AND which = 1) AS second_taken
      FROM seed_candidates GROUP BY booking_key / 3
), free_slots AS (
    SELECT c.cell * 2 + k AS slot_key, c.cell / 3240 AS r, c.cell / 540 % 6 AS pr,
           c.cell / 6 % 90 AS d, c.cell % 6 AS s, k
      FROM cells c CROSS JOIN generate_series(0, 1) AS k
     WHERE NOT c.merged AND NOT CASE k WHEN 0 THEN c.first_taken ELSE c.second_taken END
)
SELECT f.*, pg_temp.uid('hold', f.slot_key) AS hold_id,
       CASE WHEN pg_temp.draw(7, f.slot_key) < 0.5 THEN pg_temp.uid('hold-booking', f.slot_key) END
           AS booking_id,
       pg_temp.draw(8, f.slot_key) < 0.4 AS live
  FROM free_slots f
 ORDER BY pg_temp.draw(9, f.slot_key), f.slot_key
 LIMIT (SELECT p.allocations - (SELECT count(*) FILTER (WHERE which < 2)
                                       + 3 * count(*) FILTER (WHERE which = 2)
                                  FROM seed_candidates WHERE booked)
          FROM seed_params p);

INSERT INTO public.bookings (id, restaurant_id, start_at, end_at, party_size, status, reference,
                             idempotency_key, created_at, updated_at)
SELECT h.booking_id, rest.id, t.start_at, t.end_at,
       2, 'pending', 'HB' || upper(lpad(to_hex(h.slot_key), 10, '0')), 'seed-hold-' || h.slot_key,
       p.anchor::timestamptz, p.anchor::timestamptz
  FROM seed_holds h
  JOIN seed_restaurants rest ON rest.r = h.r
 CROSS JOIN seed_params p
 CROSS JOIN LATERAL pg_temp.slot_window(p.anchor - 30 + h.d::int, h.s::int, rest.timezone, -h.slot_key) AS t
 WHERE h.booking_id IS NOT NULL;

INSERT INTO public.table_holds (id, restaurant_id, booking_id, zone_id, start_at, end_at,
                                expires_at, metadata, created_at)
SELECT h.hold_id, rest.id, h.booking_id, pg_temp.uid('zone', h.r * 3 + h.pr / 2),
       t.start_at, t.end_at,
       CASE WHEN h.live THEN p.anchor + 30 ELSE p.anchor - 1 END::timestamptz,
       jsonb_build_object('source', 'seed'), p.anchor::timestamptz
  FROM seed_holds h
  JOIN seed_restaurants rest ON rest.r = h.r
 CROSS JOIN seed_params p
 CROSS JOIN LATERAL pg_temp.slot_window(p.anchor - 30 + h.d::int, h.s::int, rest.timezone, -h.slot_key) AS t;

INSERT INTO public.table_hold_members (hold_id, table_id)
SELECT h.hold_id, tbl.id FROM seed_holds h JOIN seed_tables tbl ON tbl.t = h.r * 12 + h.pr * 2 + h.k;

INSERT INTO public.allocations (id, booking_id, restaurant_id, resource_type, resource_id,
                                "window", shadow, created_at, updated_at)
SELECT pg_temp.uid('shadow', h.slot_key), h.booking_id, th.restaurant_id, 'table', tbl.id,
       tstzrange(th.start_at, th.end_at, '[)'), true, th.created_at, th.created_at
  FROM seed_holds h
  JOIN public.table_holds th ON th.id = h.hold_id
  JOIN seed_tables tbl ON tbl.t = h.r * 12 + h.pr * 2 + h.k
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
       'seed:' || b.booking_key, b.restaurant_id, b.booking_id, 'seed-' || b.booking_key,
       jsonb_build_object('booking_id', b.booking_id,
                          'reference', 'BK' || upper(lpad(to_hex(b.booking_key), 10, '0'))),
       CASE WHEN x < 0.97 THEN 1 ELSE 5 END, b.created_at, b.created_at
  FROM seed_bookings b
 CROSS JOIN LATERAL (SELECT pg_temp.draw(10, b.booking_key) AS x) AS dx
 WHERE pg_temp.draw(11, b.booking_key) < 0.2;

-- step: analyze
-- Statistics first: validating the foreign keys plans a join over these tables.
ANALYZE public.restaurants, public.zones, public.table_inventory, public.bookings,
        public.table_holds, public.table_hold_members, public.booking_table_assignments,
        public.booking_assignment_idempotency, public.allocations, public.capacity_outbox;

-- step: rebuild indexes and constraints
-- What to put back, in order: indexes first (the foreign-key checks use them), then keys and
-- exclusion constraints, then foreign keys, each as the catalog defined it. rollout.seed runs
-- these statements one by one, timing each and saying which one is running.
SELECT name, CASE WHEN phase < 3 THEN format('ALTER TABLE %s ADD CONSTRAINT %I %s', rel, name, definition)
                  ELSE definition END AS statement
  FROM seed_set_aside
 ORDER BY phase DESC, rel, name;
