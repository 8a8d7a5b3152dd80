"""`make demo`: the whole rollout on this machine, run by Airflow itself.

Starts (and seeds) the staging and production databases, a local Airflow pointed at them,
triggers `migration_rollout`, answers the approval through the HITL REST API exactly as the
UI's Approve button does, follows the run, and ends with the outcome and the artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rollout.airflow_stack import APPROVER, DAG_ID, FINISHED, FLEET_DAG_ID, AirflowStack
from rollout.artifacts import list_tree
from rollout.demo import TARGETS, prepare_fleet, prepare_target
from rollout.report import headline_artifacts

POLL_S = 1.0
# A gate is answered once the scheduler has processed its parked task's event (see
# AirflowStack.gate_settled); should its log not say so, after this long at the latest.
APPROVAL_FALLBACK_S = 30.0


def start_stack(
    allocations: int, seed: int, reset: bool, say: Callable[[str], None], fleet: int = 0
) -> AirflowStack:
    targets = [
        prepare_target(name, allocations=allocations, seed=seed, reset=reset, progress=say)
        for name in TARGETS
    ]
    if fleet:
        targets += prepare_fleet(
            fleet, allocations=allocations, seed=seed, reset=reset, progress=say
        )
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
    dag_id: str = DAG_ID,
    quiet_tasks: bool = False,
) -> tuple[str, dict[str, Any]]:
    """Print each task's state as it changes; answer each gate (the production gate, a fleet's
    wave gates) once a person could have seen it; return the run's final state."""
    seen: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    first_seen: dict[tuple[str, int], float] = {}
    answered: set[tuple[str, int]] = set()
    while time.monotonic() < deadline:
        states = stack.task_states(run_id, dag_id)
        if not quiet_tasks:
            for task, state in states.items():
                if state and seen.get(task) != state:
                    say(f"  {task:<26} {state}")
        seen = states
        for pending in stack.pending_approvals(run_id, dag_id) if approve else []:
            ti = pending["task_instance"]
            key = (ti["task_id"], ti["map_index"])
            first_seen.setdefault(key, time.monotonic())
            settled = stack.gate_settled(run_id, ti["task_id"], dag_id, ti["map_index"])
            waited = time.monotonic() - first_seen[key]
            if key in answered or not (settled or waited > APPROVAL_FALLBACK_S):
                continue
            say(f"approval waiting: {pending.get('subject')}")
            say(
                "  a person approves at "
                f"{stack.required_actions_url(run_id, ti['task_id'], dag_id)} (user "
                f"{APPROVER}, not the admin who triggered it; passwords in "
                f"{stack.home / 'passwords.json'})"
            )
            say(
                f"  this demo answers {approve!r} through the same REST call the UI makes: "
                f"PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/"
                f"{ti['task_id']}/{ti['map_index']}/hitlDetails"
            )
            stack.answer(run_id, approve, ti["task_id"], dag_id, ti["map_index"])
            answered.add(key)
        state = stack.run_state(run_id, dag_id)
        if state in FINISHED:
            return state, stack.task_states(run_id, dag_id)
        time.sleep(POLL_S)
    raise TimeoutError(f"the run {run_id} did not finish in {timeout_s:.0f} s")


def run_demo(
    *,
    allocations: int,
    seed: int,
    conf: dict[str, Any],
    say: Callable[[str], None],
    fleet: int = 0,
) -> int:
    """The rollout DAG, or with `fleet` the fleet DAG over that many production databases."""
    from rollout.airflow_paths import run_artifacts

    dag_id = FLEET_DAG_ID if fleet else DAG_ID
    conf = {"approvers": [APPROVER], **conf}  # four eyes: the admin triggers, the reviewer approves
    if fleet:
        conf = {**conf, "production_targets": ["rollout_fleet_*"], "canary_size": 1,
                "wave_size": 2}  # fmt: skip
    stack = start_stack(allocations, seed, reset=True, say=say, fleet=fleet)
    with stack:
        run_id = stack.trigger(conf, dag_id)
        say(f"triggered {dag_id}, run {run_id}")
        state, _ = follow_run(stack, run_id, say, dag_id=dag_id)
        root = run_artifacts(dag_id, run_id)
        say(f"run {run_id}: {state.upper()}")
        summary = root / "summary.md"
        if summary.exists():
            print("\n" + summary.read_text().split("\n## Artifacts")[0])
        print(f"Artifacts in {root}:")
        files = headline_artifacts(list_tree(root))
        for name in (f for f in files if not f.startswith("targets/")):
            print(f"  {name}")
        for folder in sorted(
            {"/".join(f.split("/")[:2]) for f in files if f.startswith("targets/")}
        ):
            print(f"  {folder}/ ({sum(f.startswith(folder + '/') for f in files)} files)")
    return 0 if state == "success" else 1
