"""The Airflow plugin of the rollout (loaded from the plugins folder): the artifact pages,
their link on each run, and an extra link on each task."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from rollout.artifact_views import EXTERNAL_VIEW, URL_PREFIX, RunArtifactsLink, app


class RolloutPlugin(AirflowPlugin):
    name = "rollout"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "Rollout artifacts"}]  # noqa: RUF012
    external_views = [EXTERNAL_VIEW]  # noqa: RUF012
    global_operator_extra_links = [RunArtifactsLink()]  # noqa: RUF012
