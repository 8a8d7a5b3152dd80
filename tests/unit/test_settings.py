"""Trigger parameters: defaults make a valid run; each bad value is refused naming its field."""

from __future__ import annotations

import pytest

from rollout.settings import RolloutSettings, SettingsError


def test_defaults_make_a_run_of_the_newest_bundle():
    settings = RolloutSettings.from_params({})
    assert settings.bundle.version == "20251113203000"
    assert (settings.staging_conn_id, settings.production_conn_id) == (
        "rollout_staging",
        "rollout_production",
    )
    assert settings.window.start == "now" and settings.on_reject == "rollback_staging"


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"window_minutes": 0}, "window_minutes"),
        ({"window_timezone": "Mars/Olympus"}, "window_timezone"),
        ({"window_kind": "daily", "window_start": "25:61"}, "window_start"),
        ({"window_start": "tomorrow-ish"}, "window_start"),
        ({"version": "123"}, "version"),
        ({"version": "20990101000000"}, "version"),
        ({"lock_retries": "five"}, "lock_retries"),
        ({"regression_threshold": 1}, "regression_threshold"),
        ({"on_reject": "shrug"}, "on_reject"),
        ({"approvers": [1]}, "approvers"),
        ({"production_conn_id": "rollout_staging"}, "production_conn_id"),
        ({"on_window_passed": "wait_next"}, "on_window_passed"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_a_bad_parameter_is_refused_by_name(params, field):
    with pytest.raises(SettingsError, match=field):
        RolloutSettings.from_params(params)


@pytest.mark.parametrize("conn_id", ["a/b", "../etc", "..", ".hidden", "-x", "a..b", "a b", "é"])
@pytest.mark.parametrize("field", ["staging_conn_id", "production_conn_id"])
def test_a_connection_id_that_could_name_another_folder_is_refused_by_name(field, conn_id):
    with pytest.raises(SettingsError, match=rf"^{field}: .* is not a usable connection id"):
        RolloutSettings.from_params({field: conn_id})


def test_the_trigger_forms_schema_refuses_the_same_ids():
    import jsonschema

    from rollout.settings import PARAM_SCHEMA

    schema = PARAM_SCHEMA["production_conn_id"][1]
    jsonschema.validate("prod_eu-1.main", schema)
    for bad in ("a/b", "..", ".x", "a..b"):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_four_eyes_need_someone_other_than_who_triggered():
    with pytest.raises(SettingsError, match=r"approvers: name the Airflow users .*waive_four_eyes"):
        RolloutSettings.from_params({}).approval_assignees("admin")
    alone = RolloutSettings.from_params({"approvers": ["admin"]})
    with pytest.raises(SettingsError, match="only admin, who triggered this run"):
        alone.approval_assignees("admin")
    both = RolloutSettings.from_params({"approvers": ["admin", "reviewer"]})
    assert both.approval_assignees("admin") == ["reviewer"]
    assert both.describe_approvers("admin") == "reviewer (not admin, who triggered this run)"
    assert both.approval_assignees("someone") == ["admin", "reviewer"]


def test_four_eyes_are_waived_only_by_name():
    waived = RolloutSettings.from_params({"waive_four_eyes": True})
    assert waived.approval_assignees("admin") == []  # anyone with access
    assert "four eyes waived" in waived.describe_approvers("admin")
    named = RolloutSettings.from_params({"waive_four_eyes": True, "approvers": ["admin"]})
    assert named.approval_assignees("admin") == ["admin"]
