CREATE TYPE public.booking_status AS ENUM (
    'pending',
    'pending_allocation',
    'confirmed',
    'seated',
    'completed',
    'cancelled',
    'no_show'
);
