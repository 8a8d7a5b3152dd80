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
