-- Tenant context: the application sets app.restaurant_id per transaction with
-- set_config('app.restaurant_id', <uuid>, true); RLS policies compare against it.

CREATE FUNCTION public.current_restaurant_id() RETURNS uuid
    LANGUAGE sql STABLE
AS $$
    SELECT nullif(current_setting('app.restaurant_id', true), '')::uuid
$$;

CREATE FUNCTION public.require_restaurant_context() RETURNS uuid
    LANGUAGE plpgsql STABLE
AS $$
DECLARE
    v_restaurant_id uuid := public.current_restaurant_id();
BEGIN
    IF v_restaurant_id IS NULL THEN
        RAISE EXCEPTION 'restaurant context required'
            USING ERRCODE = '42501',
                  HINT = 'set_config(''app.restaurant_id'', <restaurant uuid>, true) first';
    END IF;
    RETURN v_restaurant_id;
END
$$;
