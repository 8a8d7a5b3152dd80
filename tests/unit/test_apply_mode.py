"""Which apply mode production gets, and why: what the approver reads and the window weighs."""

from __future__ import annotations

import dataclasses

import pytest

from rollout.artifacts import ArtifactDir
from rollout.migrations import load_bundle
from rollout.run import Run
from rollout.settings import RolloutSettings
from rollout.steps import ONLINE_LOCK_S, StepFailed, choose_apply_mode


def run(tmp_path, bundle=None, **params) -> Run:
    settings = RolloutSettings.from_params(params)
    if bundle is not None:
        settings = dataclasses.replace(settings, bundle=bundle)
    return Run(settings, {}, ArtifactDir(tmp_path), "r", progress=lambda _m: None)


def test_auto_goes_online_only_past_the_bound(tmp_path):
    short = choose_apply_mode(run(tmp_path), 3.0)
    assert short["apply_mode"] == "locking" and "within online_above_s 5 s" in short["mode_reason"]
    assert short["window_lock_s"] == 3.0
    long = choose_apply_mode(run(tmp_path), 42.0)
    assert long["apply_mode"] == "online" and "exceeds online_above_s 5 s" in long["mode_reason"]
    assert long["window_lock_s"] == ONLINE_LOCK_S  # the swap, not the build, meets the window


def test_what_the_person_asked_for_is_what_runs(tmp_path):
    assert choose_apply_mode(run(tmp_path, apply_mode="locking"), 900)["apply_mode"] == "locking"
    assert choose_apply_mode(run(tmp_path, apply_mode="online"), 0.1)["apply_mode"] == "online"


def test_a_bundle_that_allows_no_online_apply(tmp_path):
    notes = load_bundle("20251113203000")
    no_online = dataclasses.replace(notes.manifest, online=None)
    bundle = dataclasses.replace(notes)
    object.__setattr__(bundle, "manifest", no_online)  # cached_property: set the instance's own
    auto = choose_apply_mode(run(tmp_path, bundle=bundle), 900)
    assert auto["apply_mode"] == "locking" and "allows no online apply" in auto["mode_reason"]
    with pytest.raises(StepFailed, match=r"no \[online\] section"):
        choose_apply_mode(run(tmp_path, bundle=bundle, apply_mode="online"), 1)


def traced_run(tmp_path, alter_predicted_s):
    """A run whose staging apply left a trace: the runner's LOCK TABLE (ACCESS EXCLUSIVE on
    allocations), then one statement predicted at `alter_predicted_s` in production."""
    import json

    from rollout.locktrace import holds

    lock = {"relation": "public.allocations", "kind": "r", "mode": "ACCESS EXCLUSIVE",
            "table": "public.allocations", "existing": True}  # fmt: skip
    statements = [
        {"n": 1, "label": "LOCK TABLE public.allocations IN ACCESS EXCLUSIVE MODE",
         "seconds": 0.001, "predicted_s": 0.001, "locks": [lock]},
        {"n": 2, "label": "ALTER TABLE public.allocations ADD CONSTRAINT …", "seconds": 3.0,
         "predicted_s": alter_predicted_s, "locks": []},
    ]  # fmt: skip
    folder = tmp_path / "staging"
    folder.mkdir()
    trace = {"statements": statements, "holds": holds(statements)}
    (folder / "lock-trace.json").write_text(json.dumps(trace))
    return run(tmp_path)


def test_auto_decides_on_the_traced_hold_when_staging_was_traced(tmp_path):
    chosen = choose_apply_mode(traced_run(tmp_path, 30.0), 1.0)  # the phase figure: 1 s
    assert chosen["apply_mode"] == "online"
    assert chosen["mode_reason"].startswith(
        "the longest predicted ACCESS EXCLUSIVE hold (public.allocations from `LOCK TABLE"
    )
    assert "30.0 s exceeds online_above_s 5 s" in chosen["mode_reason"]


def test_a_trace_without_production_counts_leaves_the_phase_figure_to_decide(tmp_path):
    chosen = choose_apply_mode(traced_run(tmp_path, None), 1.0)
    assert chosen["apply_mode"] == "locking"
    assert chosen["mode_reason"] == "predicted lock 1.0 s is within online_above_s 5 s"
