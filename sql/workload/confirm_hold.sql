-- The confirm, through the application's own function (before and after the migration).
SELECT count(*)
  FROM public.confirm_hold_assignment_tx(%(hold_id)s, %(booking_id)s, %(idempotency_key)s,
                                         false, NULL, 'confirmed')
