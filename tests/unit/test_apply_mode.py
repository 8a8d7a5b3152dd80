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
