-- The recorded phases of one online operation (or of all when %(operation)s is NULL).
SELECT * FROM rollout.online_phase
 WHERE %(operation)s::uuid IS NULL OR operation = %(operation)s::uuid
 ORDER BY id
