"""The fleet's targets, waves and turns, without Airflow: what a person triggering the fleet
relies on (the list resolved as written, waves as asked, no target starting after a failure)."""

from __future__ import annotations

import pytest

from rollout import fleet
from rollout.fleet import FleetError, FleetSettings, decide_turn, final_state, plan_waves

GROUPS = {"eu": ["prod_eu_1", "prod_eu_2"], "all": ["@eu", "prod_us_*"], "loop": ["@loop"]}
KNOWN = ["prod_eu_1", "prod_eu_2", "prod_us_1", "prod_us_2", "rollout_staging"]


def settings(**params) -> FleetSettings:
    return FleetSettings.from_params(params, groups=GROUPS, known=KNOWN)


def test_targets_are_ids_patterns_and_groups_in_the_order_given():
    assert fleet.resolve_targets(["prod_us_2", "@all"], GROUPS, KNOWN) == [
        "prod_us_2", "prod_eu_1", "prod_eu_2", "prod_us_1"
    ]  # fmt: skip
    assert fleet.resolve_targets(["prod_eu_?"], GROUPS, KNOWN) == ["prod_eu_1", "prod_eu_2"]


@pytest.mark.parametrize(
    ("items", "message"),
    [
        (["@nope"], "no group 'nope'"),
        (["@loop"], "contains itself"),
        (["shard_*"], "the pattern 'shard_\\*' matches no known connection id"),
    ],
)
def test_a_list_that_cannot_be_resolved_is_refused_by_name(items, message):
    with pytest.raises(FleetError, match=message):
        fleet.resolve_targets(items, GROUPS, KNOWN)


def test_known_ids_come_from_the_fleet_file_and_airflow_conn_variables():
    environ = {"AIRFLOW_CONN_PROD_X": "postgres://h/db", "PATH": "/bin"}
    assert fleet.known_connection_ids(GROUPS, environ) == ["prod_eu_1", "prod_eu_2", "prod_x"]


def test_the_fleet_file_is_read_and_checked(tmp_path):
    path = tmp_path / "fleet.toml"
    path.write_text('[groups]\neu = ["prod_eu_1", "prod_eu_*"]\n')
    assert fleet.load_groups(path) == {"eu": ["prod_eu_1", "prod_eu_*"]}
    path.write_text('[groups]\neu = "prod_eu_1"\n')
    with pytest.raises(FleetError, match="maps names to lists"):
        fleet.load_groups(path)
    assert fleet.load_groups(tmp_path / "missing.toml") == {}


def test_waves_are_the_canary_then_wave_size():
    targets = [f"t{i}" for i in range(8)]
    assert plan_waves(targets, 1, 3) == [["t0"], ["t1", "t2", "t3"], ["t4", "t5", "t6"], ["t7"]]
    assert plan_waves(targets[:1], 1, 5) == [["t0"]]
    assert plan_waves(targets[:3], 5, 2) == [["t0", "t1", "t2"]]


def test_one_target_is_the_default_and_the_single_rollout_settings_carry_over():
    s = settings()
    assert s.targets == ["rollout_production"]
    assert s.plan() == [{"conn_id": "rollout_production", "wave": 0}]
    assert s.rollout.production_conn_id == "rollout_production"
    assert s.rollout.lock_timeout_ms == 500


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"production_targets": []}, "production_targets"),
        ({"canary_size": 0}, "canary_size"),
        ({"on_target_failure": "shrug"}, "on_target_failure"),
        ({"production_targets": ["rollout_staging"]}, "is the staging target"),
        ({"production_targets": ["prod_eu_1"], "window_minutes": 0}, "window_minutes"),
        ({"production_targets": ["prod_eu_1"], "production_conn_id": "x"}, "production_conn_id"),
    ],
)
def test_bad_parameters_are_refused_naming_the_field(params, message):
    with pytest.raises(fleet.SettingsError, match=message):
        settings(**params)


PLAN = [{"conn_id": c, "wave": w} for c, w in [("a", 0), ("b", 1), ("c", 1), ("d", 2)]]


def states_for(**progress: str) -> dict[str, str]:
    """Task states as Airflow reports them for mapped instances: target.<task>_<index>."""
    shapes = {
        "healthy": dict.fromkeys(fleet.TARGET_TASKS, "success"),
        "failed": {"wait_for_turn": "success", "preflight": "success", "apply": "failed"},
        "running": {"wait_for_turn": "success", "preflight": "running"},
        "waiting": {"wait_for_turn": "up_for_reschedule"},
    }
    index = {t["conn_id"]: i for i, t in enumerate(PLAN)}
    return {
        f"target.{task}_{index[conn]}": state
        for conn, p in progress.items()
        for task, state in shapes[p].items()
    }


def test_a_wave_waits_for_every_earlier_target_to_be_healthy():
    assert decide_turn(PLAN, 0, {}, False).action == "go"
    assert decide_turn(PLAN, 1, states_for(a="running"), False).action == "wait"
    assert decide_turn(PLAN, 1, states_for(a="healthy"), False).action == "go"
    # the same wave runs side by side; the next waits for both
    assert decide_turn(PLAN, 2, states_for(a="healthy", b="running"), False).action == "go"
    assert decide_turn(
        PLAN, 3, states_for(a="healthy", b="healthy", c="running"), False
    ).action == ("wait")


def test_no_target_starts_after_one_failed():
    turn = decide_turn(PLAN, 3, states_for(a="healthy", b="failed", c="healthy"), False)
    assert turn.action == "stop"
    assert "after b failed" in turn.reason
    # a peer in the same wave that has not started yet stops too
    assert decide_turn(PLAN, 2, states_for(a="healthy", b="failed"), False).action == "stop"


def test_a_wave_needs_its_approval_when_asked():
    healthy = states_for(a="healthy")
    assert decide_turn(PLAN, 1, healthy, True).action == "wait"
    assert decide_turn(
        PLAN, 1, {**healthy, "wave_gate.approve_wave_0": "success"}, True
    ).action == ("go")
    rejected = decide_turn(PLAN, 1, {**healthy, "wave_gate.approve_wave_0": "failed"}, True)
    assert (rejected.action, rejected.reason) == ("stop", "not started: wave 1 was not approved")


def test_final_state_of_each_target():
    states = {
        **states_for(a="healthy", b="failed"),
        "target.wait_for_turn_3": "skipped",
        "rollback_target_1": "skipped",
        "rollback_target_0": "success",
    }
    assert final_state("rolled back", states, 0, None)[0] == "rolled back"
    assert final_state("not applied", states, 1, "apply: lock not granted") == (
        "not applied", "apply: lock not granted"
    )  # fmt: skip
    assert final_state("not applied", states, 3, "not started: b failed") == (
        "not applied", "not started: b failed"
    )  # fmt: skip
    assert final_state("applied", states_for(a="healthy"), 0, None) == ("applied", "")
    refused = {"target.preflight_2": "failed", "target.wait_for_turn_2": "success"}
    assert final_state("not applied", refused, 2, "ON CONFLICT")[0] == "refused"
    assert final_state("applied", {"rollback_target_0": "failed"}, 0, None)[0] == "refused"
