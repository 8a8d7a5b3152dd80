"""The Airflow plugin of the rollout (loaded from the plugins folder)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


class RolloutPlugin(AirflowPlugin):
    name = "rollout"
