-- One catch-up round, in a transaction that sees one snapshot for all three statements
-- (REPEATABLE READ; or under the swap's lock, where nothing else changes {live}): every
-- logged row is taken out of the log, and the copy is given those rows exactly as {live} has
-- them in that snapshot (deleted ones stay away). Every row not logged is already as {live}
-- has it, so afterwards the copy equals {live} in that snapshot, and satisfies whatever
-- {live} satisfies.
WITH taken AS (DELETE FROM {log} RETURNING {key})
INSERT INTO {keys} SELECT DISTINCT {key} FROM taken;
ANALYZE {keys};
DELETE FROM {copy} AS c USING {keys} AS k WHERE ({c_key}) = ({k_key});
INSERT INTO {copy} ({columns})
SELECT {l_columns} FROM ONLY {live} AS l JOIN {keys} AS k ON ({l_key}) = ({k_key});
