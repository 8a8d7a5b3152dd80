-- This session's scratch table of the keys one catch-up round takes (emptied at each COMMIT).
CREATE TEMP TABLE rollout_online_keys ON COMMIT DELETE ROWS AS
SELECT {key} FROM ONLY {live} WITH NO DATA
