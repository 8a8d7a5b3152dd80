"""The fleet's targets, waves and turns, without Airflow: what a person triggering the fleet
relies on (the list resolved as written, waves as asked, no target starting after a failure)."""

from __future__ import annotations

import pytest

from rollout import fleet, report
from rollout.fleet import FleetError, FleetSettings, final_state, plan_waves
from rollout.run import Run

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


@pytest.mark.parametrize(
    ("items", "groups", "message"),
    [
        (["../prod"], {}, r"production_targets: '\.\./prod' is not a usable connection id"),
        (["prod/eu"], {}, r"production_targets: 'prod/eu' is not a usable connection id"),
        ([".prod"], {}, r"production_targets: '\.prod' is not a usable connection id"),
        (["../*"], {}, r"production_targets: the pattern '\.\./\*' holds characters"),
        (["prod_*/x"], {}, r"production_targets: the pattern 'prod_\*/x' holds characters"),
        (["..*"], {}, r"production_targets: the pattern '\.\.\*' holds characters"),
        (["@../eu"], {}, r"production_targets: '@\.\./eu' is not a group name"),
        (["@bad"], {"bad": ["../../x"]}, r"production_targets \(group @bad\): '\.\./\.\./x'"),
        (["odd_*"], {}, r"production_targets \(matched by 'odd_\*'\): 'odd_\.\.x'"),
    ],
)
def test_ids_and_patterns_that_could_leave_the_runs_folder_are_refused(items, groups, message):
    """A target's id becomes targets/<conn_id>/ in the run's artifacts: nothing that could
    name another folder gets that far, whether written, in a group, or matched."""
    with pytest.raises(FleetError, match=message):
        fleet.resolve_targets(items, groups, [*KNOWN, "odd_..x"])
    with pytest.raises(FleetError, match="production_targets"):
        FleetSettings.from_params({"production_targets": items}, groups=groups, known=KNOWN)


def test_a_target_folder_is_never_made_from_an_unusable_id(tmp_path):
    from rollout.artifacts import ArtifactDir
    from rollout.fleet_steps import target_run

    s = settings(production_targets=["prod_eu_1"])
    run = Run(s.rollout, {"staging": "x"}, ArtifactDir(tmp_path / "run"), "r",
                    progress=lambda m: None)  # fmt: skip
    assert target_run(run, "prod_eu_1", "dsn").artifacts.root == tmp_path / "run/targets/prod_eu_1"
    with pytest.raises(fleet.SettingsError, match=r"production target: '\.\./\.\./x'"):
        target_run(run, "../../x", "dsn")
    assert not (tmp_path / "x").exists()


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
    assert s.plan() == [{"conn_id": "rollout_production", "wave": 0, "slot": 0}]
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


def test_more_waves_than_the_dag_lays_out_is_refused_with_the_size_that_fits():
    many = [f"prod_{i}" for i in range(100)]
    with pytest.raises(FleetError, match=r"100 targets make 21 waves, at most 12 run; make "
                       r"wave_size at least 9"):  # fmt: skip
        settings(production_targets=many, wave_size=5)
    assert len(settings(production_targets=many, wave_size=9).waves) == 12


PLAN = [
    {"conn_id": c, "wave": w, "slot": s}
    for c, w, s in [("a", 0, 0), ("b", 1, 0), ("c", 1, 1), ("d", 2, 0)]
]


def states_for(**progress: str) -> dict[str, str]:
    """Task states as Airflow reports them for mapped instances: wave_<k>.target_<slot>."""
    shapes = {"healthy": "success", "failed": "failed", "refused": "failed", "stopped": "skipped"}
    entries = {t["conn_id"]: t for t in PLAN}
    return {
        f"{fleet.target_task_id(entries[conn]['wave'])}_{entries[conn]['slot']}": shapes[p]
        for conn, p in progress.items()
    }


HEALTHY = dict.fromkeys(fleet.TARGET_STEPS, "success")


def test_progress_of_each_target_from_its_wave_and_slot():
    states = states_for(a="healthy", b="failed", c="stopped")
    assert [fleet.target_progress(states, t) for t in PLAN] == [
        "healthy", "failed", "stopped", "pending"
    ]  # fmt: skip
    assert fleet.failed_targets(PLAN, states) == ["b"]
    assert fleet.wave_summary(PLAN, 1, states) == {"b": "failed", "c": "stopped"}


def test_no_target_starts_after_one_failed():
    from rollout.fleet_steps import stop_reason

    assert stop_reason(PLAN, states_for(a="healthy")) is None
    assert stop_reason(PLAN, states_for(a="healthy", b="refused")) == (
        "not started: the fleet stopped after b failed"
    )


def test_final_state_of_each_target():
    rolled_back = {**HEALTHY, "rollback": "success"}
    assert final_state("rolled back", "success", rolled_back, None)[0] == "rolled back"
    apply_failed = {"preflight": "success", "apply": "failed"}
    assert final_state("not applied", "failed", apply_failed, "apply: lock not granted") == (
        "not applied", "apply: lock not granted"
    )  # fmt: skip
    assert final_state("not applied", "failed", {"preflight": "failed"}, "ON CONFLICT")[0] == (
        "refused"
    )
    assert final_state("not applied", None, {}, None) == (
        "not applied", "never started: an earlier wave did not succeed"
    )  # fmt: skip
    assert final_state("applied", "success", HEALTHY, None) == ("applied", "")
    refused = {**HEALTHY, "validate": "failed", "rollback": "failed"}
    assert final_state("applied", "failed", refused, None)[0] == "refused"


def test_data_docs_on_the_canary_only_unless_asked_for_everywhere():
    canary_only = settings(production_targets=["a", "b", "c", "d"])
    assert [canary_only.renders_data_docs(t) for t in PLAN] == [True, False, False, False]
    everywhere = settings(production_targets=["a", "b", "c", "d"], data_docs="every target")
    assert all(everywhere.renders_data_docs(t) for t in PLAN)
    with pytest.raises(FleetError, match="data_docs"):
        settings(production_targets=["a"], data_docs="some")


def test_rollback_policy():
    from rollout.fleet_steps import rollback_reason

    leave = settings(production_targets=["a", "b", "c", "d"])
    everything = settings(production_targets=["a", "b", "c", "d"], on_target_failure="rollback_all")
    failed = states_for(a="healthy", b="refused")
    assert rollback_reason(leave, PLAN, 0, failed, HEALTHY) is None
    assert rollback_reason(everything, PLAN, 0, failed, HEALTHY) == (
        "b failed; on_target_failure=rollback_all"
    )
    assert rollback_reason(everything, PLAN, 1, failed, {"preflight": "failed"}) is None
    assert rollback_reason(leave, PLAN, 0, states_for(a="healthy"), HEALTHY) is None
    # rolled back in its own task already: left alone
    done = {**HEALTHY, "validate": "failed", "rollback": "success"}
    assert rollback_reason(everything, PLAN, 0, failed, done) is None
    bad_validation = {"preflight": "success", "apply": "success", "validate": "failed"}
    assert rollback_reason(leave, PLAN, 0, states_for(a="failed"), bad_validation) == (
        "its validation failed"
    )
    # its process killed after the apply: never validated, so never left applied
    killed = {"preflight": "success", "apply": "success"}
    assert rollback_reason(leave, PLAN, 0, states_for(a="failed"), killed).startswith(
        "its task ended after the apply"
    )
    regressed = {**HEALTHY, "monitor": "failed"}
    assert rollback_reason(leave, PLAN, 0, states_for(a="failed"), regressed) == (
        "its performance regressed (on_regression=rollback_production)"
    )
    keep = settings(production_targets=["a", "b", "c", "d"], on_regression="keep")
    assert rollback_reason(keep, PLAN, 0, states_for(a="failed"), regressed) is None
    rejected = {**states_for(a="healthy"), "wave_1.approve": "failed"}
    assert rollback_reason(everything, PLAN, 0, rejected, HEALTHY) == (
        "a wave was not approved; on_target_failure=rollback_all"
    )


def test_the_production_gate_names_the_fleet_and_its_largest_target(tmp_path):
    from rollout.artifacts import ArtifactDir

    s = settings(
        production_targets=["prod_eu_1", "prod_eu_2", "prod_us_1"],
        wave_size=1,
        approvers=["reviewer"],
    )
    run = Run(s.rollout, {}, ArtifactDir(tmp_path), "run", progress=lambda m: None)
    pre = {"plan": s.plan(), "waves": len(s.waves), "on_target_failure": "leave_healthy",
           "production": {"conn_id": "prod_us_1", "locked_rows": 900_000}}  # fmt: skip
    facts = {
        "preflight": pre, "predicted_lock_s": 12.5, "apply_staging": {"lock_seconds": 1.2},
        "validate_staging": {"expectations": 20, "catalog": 22},
        "capture_db_diff": {"drift_empty": True, "change": "23 added"},
        "run_assignment_tests": {"line": "12 passed"},
    }  # fmt: skip
    body = report.approval_body(run, facts, "http://x/rollout/runs/r/")
    assert "- Fleet: 3 production targets in 3 waves, canary first" in body
    assert "the largest, prod_us_1" in body
    assert (
        "- Production: 900,000 rows in public.allocations; predicted lock on public.allocations"
        " **12.5 s**" in body
    )
