"""`make demo`: the whole rollout on this machine, run by Airflow itself.

Starts (and seeds) the staging and production databases, a local Airflow pointed at them,
triggers `migration_rollout`, answers the approval through the HITL REST API exactly as the
UI's Approve button does, follows the run, and ends with the outcome and the artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rollout.airflow_stack import FINISHED, AirflowStack
from rollout.artifacts import list_tree
from rollout.demo import TARGETS, prepare_target
from rollout.steps import headline_artifacts

POLL_S = 2.0
# Airflow 3.3 race, seen here: an answer that lands before the scheduler has processed the
# executor's "workload finished" event of the parked task re-queues the task, and the late
# event then marks it failed ("finished with state success, but the task instance's state
# attribute is queued"). A person never clicks that fast; the demo waits as long as one would.
APPROVAL_GRACE_S = 5.0


def start_stack(
    allocations: int, seed: int, reset: bool, say: Callable[[str], None]
) -> AirflowStack:
    targets = [
        prepare_target(name, allocations=allocations, seed=seed, reset=reset, progress=say)
        for name in TARGETS
    ]
    stack = AirflowStack(connections={f"rollout_{t.name}": t.dsn for t in targets})
    stack.start(say)
    return stack


def follow_run(
    stack: AirflowStack,
    run_id: str,
    say: Callable[[str], None],
    *,
    approve: str | None = "Approve",
    timeout_s: float = 1800,
) -> tuple[str, dict[str, Any]]:
    """Print each task's state as it changes; answer the gate; return the run's final state."""
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    answered = False
    awaiting_since: float | None = None
    while time.monotonic() < deadline:
        states = stack.task_states(run_id)
        for task, state in states.items():
            if state and seen.get(task) != state:
                say(f"  {task:<26} {state}")
        seen = states
        if states.get("approve_production") == "awaiting_input" and awaiting_since is None:
            awaiting_since = time.monotonic()
        ready = awaiting_since is not None and time.monotonic() - awaiting_since >= APPROVAL_GRACE_S
        if approve and not answered and ready:
            pending = stack.pending_approval(run_id)
            if pending:
                say(f"approval waiting: {pending.get('subject')}")
                say(
                    "  a person approves at "
                    f"{stack.required_actions_url(run_id)} (user admin, password in "
                    f"{stack.home / 'passwords.json'})"
                )
                say(
                    f"  this demo answers {approve!r} through the same REST call the UI makes: "
                    f"PATCH /api/v2/dags/migration_rollout/dagRuns/{run_id}/taskInstances/"
                    "approve_production/-1/hitlDetails"
                )
                stack.answer(run_id, approve)
                answered = True
        state = stack.run_state(run_id)
        if state in FINISHED:
            return state, stack.task_states(run_id)
        time.sleep(POLL_S)
    raise TimeoutError(f"the run {run_id} did not finish in {timeout_s:.0f} s")


def run_demo(
    *, allocations: int, seed: int, conf: dict[str, Any], say: Callable[[str], None]
) -> int:
    from rollout.airflow_support import run_artifacts

    stack = start_stack(allocations, seed, reset=True, say=say)
    with stack:
        run_id = stack.trigger(conf)
        say(f"triggered migration_rollout, run {run_id}")
        state, _ = follow_run(stack, run_id, say)
        root = run_artifacts("migration_rollout", run_id)
        say(f"run {run_id}: {state.upper()}")
        summary = root / "summary.md"
        if summary.exists():
            print("\n" + summary.read_text().split("\n## Artifacts")[0])
        print(f"Artifacts in {root}:")
        for name in headline_artifacts(list_tree(root)):
            print(f"  {name}")
    return 0 if state == "success" else 1
