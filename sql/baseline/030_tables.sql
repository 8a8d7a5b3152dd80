-- The tables of the booking backend that the migration touches or depends on,
-- reduced to the columns that matter (domain.md), with the origin's defaults.

CREATE TABLE public.restaurants (
    id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name        text NOT NULL,
    slug        text NOT NULL UNIQUE,
    timezone    text NOT NULL DEFAULT 'Europe/London',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE public.zones (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    restaurant_id  uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
    name           text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (restaurant_id, name)
);

CREATE TABLE public.table_inventory (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    restaurant_id  uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
    table_number   text NOT NULL,
    capacity       integer NOT NULL DEFAULT 2 CHECK (capacity > 0),
    zone_id        uuid REFERENCES public.zones (id) ON DELETE SET NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (restaurant_id, table_number)
);

CREATE TABLE public.bookings (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    restaurant_id    uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
    start_at         timestamptz NOT NULL,
    end_at           timestamptz NOT NULL,
    party_size       integer NOT NULL DEFAULT 2 CHECK (party_size > 0),
    status           public.booking_status NOT NULL DEFAULT 'pending',
    reference        text NOT NULL DEFAULT upper(substr(md5(gen_random_uuid()::text), 1, 10)) UNIQUE,
    idempotency_key  text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT bookings_window_check CHECK (start_at < end_at)
);
CREATE INDEX bookings_restaurant_start_idx ON public.bookings (restaurant_id, start_at);

CREATE TABLE public.table_holds (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    restaurant_id  uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
    booking_id     uuid REFERENCES public.bookings (id) ON DELETE CASCADE,
    zone_id        uuid,
    start_at       timestamptz NOT NULL,
    end_at         timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL DEFAULT now() + interval '10 minutes',
    metadata       jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT table_holds_window_check CHECK (start_at < end_at)
);
CREATE INDEX table_holds_booking_idx ON public.table_holds (booking_id);

CREATE TABLE public.table_hold_members (
    hold_id   uuid NOT NULL REFERENCES public.table_holds (id) ON DELETE CASCADE,
    table_id  uuid NOT NULL REFERENCES public.table_inventory (id) ON DELETE CASCADE,
    PRIMARY KEY (hold_id, table_id)
);

CREATE TABLE public.booking_table_assignments (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id       uuid NOT NULL REFERENCES public.bookings (id) ON DELETE CASCADE,
    table_id         uuid NOT NULL REFERENCES public.table_inventory (id) ON DELETE CASCADE,
    assigned_by      uuid,
    idempotency_key  text,
    merge_group_id   uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (booking_id, table_id)
);

CREATE TABLE public.booking_assignment_idempotency (
    booking_id        uuid NOT NULL REFERENCES public.bookings (id) ON DELETE CASCADE,
    idempotency_key   text NOT NULL,
    payload_checksum  text NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (booking_id, idempotency_key)
);

CREATE TABLE public.allocations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    booking_id      uuid REFERENCES public.bookings (id) ON DELETE CASCADE,
    restaurant_id   uuid NOT NULL REFERENCES public.restaurants (id) ON DELETE CASCADE,
    resource_type   text NOT NULL CHECK (resource_type IN ('table', 'merge_group')),
    resource_id     uuid NOT NULL,
    "window"        tstzrange NOT NULL,
    shadow          boolean NOT NULL DEFAULT false,
    is_maintenance  boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT allocations_booking_resource_key UNIQUE (booking_id, resource_type, resource_id),
    -- Pre-migration: no tenant column, no shadow filter, checked at COMMIT.
    CONSTRAINT allocations_resource_window_excl EXCLUDE USING gist (
        resource_type WITH =, resource_id WITH =, "window" WITH &&
    ) DEFERRABLE INITIALLY DEFERRED
);
CREATE INDEX allocations_resource_window_idx
    ON public.allocations USING gist (resource_type, resource_id, "window");

CREATE TABLE public.capacity_outbox (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'processing', 'done', 'dead')),
    event_type       text NOT NULL,
    dedupe_key       text,
    restaurant_id    uuid,
    booking_id       uuid,
    idempotency_key  text,
    payload          jsonb NOT NULL DEFAULT '{}'::jsonb,
    attempt_count    integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX capacity_outbox_event_dedupe_key
    ON public.capacity_outbox (event_type, dedupe_key) WHERE dedupe_key IS NOT NULL;
