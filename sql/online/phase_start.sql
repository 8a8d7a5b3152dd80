-- A phase of an online apply begins: its row, committed at once.
INSERT INTO rollout.online_phase (operation, version, direction, table_name, phase, status, detail)
VALUES (%(operation)s, %(version)s, %(direction)s, %(table)s, %(phase)s, 'started', %(detail)s::jsonb)
RETURNING id
