-- Every function of that schema-qualified name: its arguments, result and security.
-- Parameter: %(name)s, e.g. 'public.confirm_hold_assignment_tx'.
SELECT pg_get_function_identity_arguments(p.oid) AS arguments,
       pg_get_function_result(p.oid) AS result,
       p.prosecdef AS security_definer,
       coalesce(array_to_string(p.proconfig, ', '), '') AS settings
  FROM pg_proc p
 WHERE p.pronamespace::regnamespace::text || '.' || p.proname = %(name)s
