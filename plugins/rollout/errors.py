"""The errors the rollout raises on purpose: each says what went wrong and what to do."""


class RolloutError(Exception):
    """A refusal or failure a person has to act on; the message says how."""


class TargetUnavailable(RolloutError):
    """A database could not be reached."""


class BundleError(RolloutError):
    """A migration bundle on disk is missing, malformed or not what the ledger recorded."""


class RollbackRefused(RolloutError):
    """down.sql refused: restoring the old constraint would fail on existing data."""

    sqlstate = "RB001"


# What a failed task whose reason was never kept says: every step keeps its reason
# (failures/<task>.txt) when it fails, whatever the error, so only a process that died does not.
KILLED = "killed / ended without a reason: the task process died"
# Tasks whose failure is told elsewhere: an approval gate's answer (approval.json), the report's
# outcome (it fails the run on purpose unless the rollout succeeded).
TOLD_ELSEWHERE = ("approve_production", ".approve", "report")


def reason_or_killed(task: str, state: str | None, reason: str | None) -> str | None:
    """A task's kept reason; for a failed task without one (not a gate or the report), KILLED."""
    if reason is None and state == "failed" and not task.endswith(TOLD_ELSEWHERE):
        return KILLED
    return reason
