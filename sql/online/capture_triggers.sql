-- Every committed change to {live} from here on is logged. ENABLE ALWAYS: a logical
-- replication apply worker (session_replication_role = replica) is logged too.
CREATE TRIGGER rollout_online_capture_insert AFTER INSERT ON {live}
    REFERENCING NEW TABLE AS rollout_new FOR EACH STATEMENT EXECUTE FUNCTION {capture}();
CREATE TRIGGER rollout_online_capture_update AFTER UPDATE ON {live}
    REFERENCING OLD TABLE AS rollout_old NEW TABLE AS rollout_new
    FOR EACH STATEMENT EXECUTE FUNCTION {capture}();
CREATE TRIGGER rollout_online_capture_delete AFTER DELETE ON {live}
    REFERENCING OLD TABLE AS rollout_old FOR EACH STATEMENT EXECUTE FUNCTION {capture}();
CREATE TRIGGER rollout_online_capture_truncate BEFORE TRUNCATE ON {live}
    FOR EACH STATEMENT EXECUTE FUNCTION {refuse_truncate}();
ALTER TABLE {live} ENABLE ALWAYS TRIGGER rollout_online_capture_insert,
    ENABLE ALWAYS TRIGGER rollout_online_capture_update,
    ENABLE ALWAYS TRIGGER rollout_online_capture_delete,
    ENABLE ALWAYS TRIGGER rollout_online_capture_truncate;
