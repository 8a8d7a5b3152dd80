"""docker-compose.yml, checked without a Docker engine (none runs on our machines): it parses,
has every service the README names with pinned images, health checks and start order, gives
the DAG the connections it expects, and the seed script it mounts is the project's own and
lays down exactly what `make demo` does (run here against real PostgreSQL)."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml
from psycopg.conninfo import conninfo_to_dict

from rollout import db
from rollout.baseline import apply_baseline
from rollout.checksums import table_checksums
from rollout.clusters import client_binary
from rollout.paths import PROJECT_ROOT
from rollout.seed import SEED_TABLES, seed_database
from rollout.settings import PARAM_SCHEMA

COMPOSE = PROJECT_ROOT / "docker-compose.yml"
SERVICES = [
    "airflow-metadata", "staging-db", "production-db", "airflow-init", "airflow-apiserver",
    "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
]  # fmt: skip
CELERY_SERVICES = ["redis", "airflow-worker-1", "airflow-worker-2"]  # the profile `celery`


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def locked_version(package: str) -> str:
    lock = tomllib.loads((PROJECT_ROOT / "uv.lock").read_text())
    return next(p["version"] for p in lock["package"] if p["name"] == package)


def test_every_service_named_in_the_readme_exists(compose):
    assert sorted(compose["services"]) == sorted(SERVICES + CELERY_SERVICES)
    readme = (PROJECT_ROOT / "README.md").read_text()
    for service in SERVICES + CELERY_SERVICES:
        assert f"`{service}`" in readme, f"README does not name {service}"


def test_images_are_pinned_and_airflow_matches_the_lock(compose):
    for name, service in compose["services"].items():
        image = service["image"]
        _, _, tag = image.partition(":")
        assert tag and tag != "latest" and re.match(r"\d+\.\d+", tag), f"{name}: {image}"
    dockerfile = (PROJECT_ROOT / "compose" / "Dockerfile").read_text()
    airflow = locked_version("apache-airflow")
    assert f"FROM apache/airflow:{airflow}-python3.11" in dockerfile
    assert compose["services"]["staging-db"]["image"].startswith("postgres:15.")


def test_start_order_and_health_checks(compose):
    services = compose["services"]
    for name in SERVICES:
        if name != "airflow-init":
            assert "healthcheck" in services[name], f"{name} has no health check"
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                 "airflow-triggerer"):  # fmt: skip
        depends = services[name]["depends_on"]
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
        for db_service in ("airflow-metadata", "staging-db", "production-db"):
            assert depends[db_service]["condition"] == "service_healthy"


def test_the_dag_gets_the_connections_and_folders_it_expects(compose):
    for name in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor"):
        service = compose["services"][name]
        env = service["environment"]
        for target in ("staging", "production"):
            conn_id = PARAM_SCHEMA[f"{target}_conn_id"][0]
            value = env[f"AIRFLOW_CONN_{conn_id.upper()}"]
            assert f"@{target}-db:5432/booking" in value
        mounts = {v.split(":")[1]: v.split(":")[0] for v in service["volumes"]}
        for folder in ("dags", "plugins", "sql", "expectations"):
            assert mounts[f"/opt/rollout/{folder}"] == f"./{folder}"
            assert (PROJECT_ROOT / folder).is_dir()
        assert mounts["/opt/rollout/artifacts"] == "artifacts"  # the named volume
        assert env["AIRFLOW__CORE__DAGS_FOLDER"] == "/opt/rollout/dags"
        # A run triggered through the REST API starts without anyone unpausing the DAG.
        assert env["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "False"
    assert "artifacts" in compose["volumes"]


def test_the_targets_mount_the_projects_own_seed_script(compose):
    for target in ("staging-db", "production-db"):
        volumes = compose["services"][target]["volumes"]
        assert "./compose/initdb:/docker-entrypoint-initdb.d:ro" in volumes
        assert "./sql:/rollout/sql:ro" in volumes
    assert sorted(p.name for p in (PROJECT_ROOT / "compose" / "initdb").iterdir()) == [
        "10-rollout.sh"
    ]


def test_the_seed_script_lays_down_what_make_demo_does(make_database):
    """The entrypoint script, run as the postgres image runs it, against an empty database,
    gives the same rows as the project's own baseline + seed with the same settings."""
    by_script = make_database(baseline=False)
    params = conninfo_to_dict(by_script)
    env = {
        **os.environ,
        "PATH": f"{Path(client_binary('psql')).parent}:{os.environ['PATH']}",
        "POSTGRES_USER": params.get("user", "postgres"),
        "POSTGRES_DB": params["dbname"],
        "PGHOST": params.get("host", ""),
        "PGPORT": str(params.get("port", "5432")),
        "ROLLOUT_SQL_DIR": str(PROJECT_ROOT / "sql"),
        "ROLLOUT_SEED_ALLOCATIONS": "3000",
        "ROLLOUT_SEED": "42",
        "ROLLOUT_SEED_ANCHOR": "2026-12-01",
    }
    script = PROJECT_ROOT / "compose" / "initdb" / "10-rollout.sh"
    done = subprocess.run(["sh", str(script)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "rollout: target ready" in done.stdout

    by_project = make_database(baseline=False)
    with db.connect(by_project) as conn:
        apply_baseline(conn)
        seed_database(conn, 3000, seed=42, anchor=dt.date(2026, 12, 1))
    with db.connect(by_script) as a, db.connect(by_project) as b:
        assert table_checksums(a, SEED_TABLES) == table_checksums(b, SEED_TABLES)
        extensions = {row[0] for row in a.execute("SELECT extname FROM pg_extension")}
    assert {"btree_gist", "pg_stat_statements"} <= extensions


def test_the_celery_profile_adds_a_broker_and_two_workers_and_nothing_else_changes(compose):
    services = compose["services"]
    celery = sorted(n for n, s in services.items() if "celery" in s.get("profiles", []))
    assert celery == sorted(CELERY_SERVICES)
    assert all("profiles" not in services[n] for n in SERVICES)  # the default stack is as it was
    for worker in ("airflow-worker-1", "airflow-worker-2"):
        service = services[worker]
        assert service["command"] == "celery worker"
        assert service["image"] == services["airflow-scheduler"]["image"]
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert "healthcheck" in service
    env = services["airflow-scheduler"]["environment"]
    assert (
        env["AIRFLOW__CORE__EXECUTOR"]
        == "${ROLLOUT_EXECUTOR:-rollout.executor.RolloutLocalExecutor}"
    )
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0"
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-\w+", services["redis"]["image"])
    # the fleet's pool exists before any DAG runs
    assert "airflow pools set rollout_fleet" in "".join(services["airflow-init"]["command"])
    assert locked_version("apache-airflow-providers-celery")


# --- secrets and the published port (issue 16 point 3) -------------------------------------
# What the stack cannot start without: no default, ever. A public default JWT secret lets
# anyone sign a token as any user.
REQUIRED = [
    "ROLLOUT_ADMIN_PASSWORD", "ROLLOUT_JWT_SECRET", "ROLLOUT_API_SECRET",
    "ROLLOUT_METADATA_DB_PASSWORD", "ROLLOUT_TARGET_DB_PASSWORD",
]  # fmt: skip


class MissingVariable(Exception):
    pass


def _closing_brace(text: str, start: int) -> int:
    """Index of the '}' closing the '${' at start (nested '${…}' inside it skipped)."""
    depth, i = 0, start
    while i < len(text):
        if text.startswith("${", i):
            depth, i = depth + 1, i + 2
            continue
        if text[i] == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise ValueError(f"unclosed ${{ in {text!r}")


def references(text: str) -> list[tuple[str, str | None, str]]:
    """Every ${NAME…} in a compose value, nested ones included: (name, operator, rest)."""
    found, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i)
            m = re.fullmatch(r"([_A-Za-z]\w*)(?:(:?[-?])(.*))?", text[i + 2 : end], re.S)
            assert m, text
            found.append(m.groups(""))
            found += references(m.group(3) or "")
            i = end + 1
        else:
            i += 1
    return found


def interpolate(text: str, env: dict[str, str]) -> str:
    """A compose value as Compose interpolates it (the forms this file uses: $$, ${X},
    ${X:-default}, ${X:?message}, nested; like Compose, a default is interpolated first)."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("${", i):
            end = _closing_brace(text, i)
            name, op, rest = re.fullmatch(
                r"([_A-Za-z]\w*)(?:(:?[-?])(.*))?", text[i + 2 : end], re.S
            ).groups()
            rest = interpolate(rest or "", env)
            value = env.get(name)
            if op in (":-", "-"):
                use_default = value is None or (op == ":-" and value == "")
                out.append(rest if use_default else value)
            elif op in (":?", "?"):
                if value is None or (op == ":?" and value == ""):
                    raise MissingVariable(f"{name}: {rest}")
                out.append(value)
            else:
                out.append(value or "")
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _strings(node) -> list[str]:
    if isinstance(node, dict):
        return [s for v in node.values() for s in _strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in _strings(v)]
    return [node] if isinstance(node, str) else []


def _resolved(node, env: dict[str, str]):
    if isinstance(node, dict):
        return {k: _resolved(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolved(v, env) for v in node]
    return interpolate(node, env) if isinstance(node, str) else node


def test_every_secret_and_password_is_required_with_a_way_to_make_one(compose):
    refs = [r for s in _strings(compose) for r in references(s)]
    secret_refs = [r for r in refs if re.search(r"PASSWORD|SECRET", r[0])]
    assert sorted({name for name, _, _ in secret_refs}) == sorted(REQUIRED)
    for name, op, message in secret_refs:
        assert op == ":?", f"${{{name}}} must be ${{{name}:?…}}, not {op or 'bare'}"
        assert name in message and "openssl rand -hex" in message, message
    # Nothing secret is written in the file itself.
    text = COMPOSE.read_text()
    assert "change-me" not in text
    assert not re.search(r"^\s*\w*(PASSWORD|SECRET|SECRET_KEY): +[^$\s]", text, re.M)
    assert not re.search(r"://\w+:(airflow|postgres)@", text)


def test_the_stack_does_not_interpolate_without_each_secret(compose):
    given = {name: f"value-of-{name.lower()}" for name in REQUIRED}
    resolved = _resolved(compose, given)  # all given: the file interpolates
    env = resolved["services"]["airflow-apiserver"]["environment"]
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"] == given["ROLLOUT_JWT_SECRET"]
    assert env["AIRFLOW__API__SECRET_KEY"] == given["ROLLOUT_API_SECRET"]
    metadata = given["ROLLOUT_METADATA_DB_PASSWORD"]
    assert f"airflow:{metadata}@airflow-metadata" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert (
        f"postgres:{given['ROLLOUT_TARGET_DB_PASSWORD']}@staging-db"
        in env["AIRFLOW_CONN_ROLLOUT_STAGING"]
    )
    services = resolved["services"]
    assert services["airflow-metadata"]["environment"]["POSTGRES_PASSWORD"] == metadata
    for target in ("staging-db", "production-db"):
        password = services[target]["environment"]["POSTGRES_PASSWORD"]
        assert password == given["ROLLOUT_TARGET_DB_PASSWORD"]
    init = services["airflow-init"]["environment"]["ROLLOUT_ADMIN_PASSWORD"]
    assert init == given["ROLLOUT_ADMIN_PASSWORD"]
    for missing in REQUIRED:
        with pytest.raises(MissingVariable, match=missing):
            _resolved(compose, {k: v for k, v in given.items() if k != missing})


def test_the_ui_is_published_on_127_0_0_1_unless_the_operator_says_otherwise(compose):
    given = {name: "x" for name in REQUIRED}
    services = compose["services"]
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert list(published) == ["airflow-apiserver"]  # nothing else leaves the host
    ports = services["airflow-apiserver"]["ports"]
    assert [interpolate(p, given) for p in ports] == ["127.0.0.1:8080:8080"]
    wider = {**given, "ROLLOUT_UI_BIND": "0.0.0.0", "ROLLOUT_UI_PORT": "8443"}
    assert [interpolate(p, wider) for p in ports] == ["0.0.0.0:8443:8080"]
    readme = (PROJECT_ROOT / "README.md").read_text()
    for name in [*REQUIRED, "ROLLOUT_UI_BIND", "ROLLOUT_UI_PORT", "ROLLOUT_BASE_URL"]:
        assert f"`{name}`" in readme, f"README does not name {name}"
    assert "reverse proxy" in readme and "TLS" in readme
