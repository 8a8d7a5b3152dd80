"""Airflow's SimpleAuthManager with one DAG hidden from one user: SimpleAuthManager's roles
let every user read every DAG, and the plugin's check must be shown to ask about the DAG of
the URL."""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

HIDDEN_DAG = "payroll_rollout"
OUTSIDER = "outsider"


class OneDagHiddenAuthManager(SimpleAuthManager):
    def is_authorized_dag(self, *, method: str, user: Any, **kwargs: Any) -> bool:
        details = kwargs.get("details")
        if user.get_name() == OUTSIDER and details is not None and details.id == HIDDEN_DAG:
            return False
        return super().is_authorized_dag(method=method, user=user, **kwargs)
