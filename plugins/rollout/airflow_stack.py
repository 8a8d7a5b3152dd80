"""A local Airflow for the demo, `make up` and the end-to-end tests: the real api-server,
scheduler and dag-processor (LocalExecutor, SQLite metadata) under `.rollout/airflow`, and a
small client of its REST API — the same calls the UI makes, the approval included."""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from rollout.errors import RolloutError
from rollout.fleet import FLEET_POOL
from rollout.paths import PROJECT_ROOT, STATE_DIR

COMPONENTS = ("api-server", "scheduler", "dag-processor")
LOCAL_EXECUTOR = "rollout.executor.RolloutLocalExecutor"
ADMIN_USER = "admin"  # triggers runs
APPROVER = "reviewer"  # approves them: four eyes, even on a laptop
USERS = (ADMIN_USER, APPROVER)
DAG_ID = "migration_rollout"
FLEET_DAG_ID = "fleet_rollout"
REDIS_BROKER = "redis://127.0.0.1:6379/0"
FINISHED = ("success", "failed")
# The scheduler's log line for an executor event it has processed (see gate_settled).
EXECUTOR_EVENT = re.compile(
    r"Received executor event with state \w+ for task instance TaskInstanceKey\("
    r"dag_id='([^']+)', task_id='([^']+)', run_id='([^']+)', try_number=\d+, map_index=(-?\d+)\)"
)


@dataclass
class AirflowStack:
    home: Path = STATE_DIR / "airflow"
    port: int = int(os.environ.get("ROLLOUT_AIRFLOW_PORT", "8080"))
    connections: dict[str, str] = field(default_factory=dict)  # conn id -> libpq DSN
    extra_env: dict[str, str] = field(default_factory=dict)
    # LocalExecutor by default; CeleryExecutor runs tasks on `celery_workers` workers of its
    # own (a queue of their own on the broker, so two stacks never take each other's tasks).
    executor: str = "LocalExecutor"
    # LocalExecutor: preload the tasks' modules before forking workers (rollout/executor.py);
    # False runs Airflow's plain LocalExecutor (the benchmarks compare the two).
    preload: bool = True
    celery_workers: int = 2
    broker_url: str = os.environ.get("ROLLOUT_CELERY_BROKER", REDIS_BROKER)
    parallelism: int = 4
    fleet_pool_slots: int = int(os.environ.get("ROLLOUT_FLEET_CONCURRENCY", "4"))
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    _tokens: dict[str, str] = field(default_factory=dict)
    _scheduler_log_offset: int = 0
    _processed_events: set[tuple[str, str, str, int]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def password(self) -> str:
        return self.password_of(ADMIN_USER)

    def password_of(self, user: str) -> str:
        return json.loads(self._passwords_file.read_text())[user]

    @property
    def _passwords_file(self) -> Path:
        return self.home / "passwords.json"

    def _secret(self, name: str) -> str:
        """A secret kept in the home folder, so every component (and a restart) agrees."""
        path = self.home / f".{name}"
        if not path.exists():
            path.write_text(secrets.token_urlsafe(32))
            path.chmod(0o600)
        return path.read_text()

    def env(self) -> dict[str, str]:
        self.home.mkdir(parents=True, exist_ok=True)
        known = (
            json.loads(self._passwords_file.read_text()) if self._passwords_file.exists() else {}
        )
        if set(USERS) - set(known):  # a home made before the approver existed gains one
            known.update({u: secrets.token_urlsafe(9) for u in USERS if u not in known})
            self._passwords_file.write_text(json.dumps(known))
            self._passwords_file.chmod(0o600)
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            # Airflow's own switch: the DAGs are ready to run once parsed. Paused, a run
            # triggered through the REST API (as the README invites) stays queued forever.
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            # The LocalExecutor with the tasks' modules imported once, before it forks its
            # workers (rollout/executor.py): every task inherits them instead of importing.
            "AIRFLOW__CORE__EXECUTOR": LOCAL_EXECUTOR
            if self.executor == "LocalExecutor" and self.preload
            else self.executor,
            "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(f"{u}:admin" for u in USERS),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self._passwords_file),
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._secret("jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": self._secret("api_secret"),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "300",
            # The task supervisor notices a finished task at its next poll, up to this many
            # seconds later (5 by default): every task of a run cost 5 s beyond its work.
            "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "GX_ANALYTICS_ENABLED": "false",
            "ROLLOUT_PROJECT_ROOT": str(PROJECT_ROOT),
            "ROLLOUT_STATE_DIR": str(STATE_DIR),
        }
        if self.executor == "CeleryExecutor":
            env.update(
                {
                    "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
                    "AIRFLOW__CELERY__RESULT_BACKEND": self.broker_url,
                    "AIRFLOW__OPERATORS__DEFAULT_QUEUE": f"rollout-{self._secret('queue')[:8]}",
                    "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.parallelism),
                }
            )
        for conn_id, dsn in self.connections.items():
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = connection_json(dsn)
        env.update(self.extra_env)
        return env

    def _commands(self, env: dict[str, str]) -> dict[str, tuple[list[str], dict[str, str]]]:
        """name -> (airflow arguments, environment) of each process of the stack."""
        commands = {name: ([name], env) for name in COMPONENTS}
        if self.executor == "CeleryExecutor":
            queue = env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"]
            for i in range(1, self.celery_workers + 1):
                # Each worker serves its task logs on a port of its own (one machine here).
                worker_env = {**env, "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}
                commands[f"celery-worker-{i}"] = (
                    ["celery", "worker", "--queues", queue, "--celery-hostname",
                     f"rollout-{i}@%h"],
                    worker_env,
                )  # fmt: skip
        return commands

    def airflow(self, *args: str, timeout: float = 300) -> str:
        completed = subprocess.run(
            [str(Path(sys.executable).parent / "airflow"), *args],
            env=self.env(), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        if completed.returncode != 0:
            raise RolloutError(
                f"airflow {' '.join(args)} failed: {completed.stderr.strip()[-1500:]}"
            )
        return completed.stdout

    def start(self, say: Callable[[str], None] = print, timeout: float = 180) -> None:
        say(f"airflow: metadata database in {self.home} (airflow db migrate)")
        self.airflow("db", "migrate")
        self.airflow(
            "pools", "set", FLEET_POOL, str(self.fleet_pool_slots),
            "fleet_rollout: production targets worked on at once",
        )  # fmt: skip
        self._launch(say, timeout)
        for dag_id in (DAG_ID, FLEET_DAG_ID):
            if self.is_paused(dag_id):  # a person paused it, or the home predates the setting
                say(
                    f"airflow: {dag_id} is paused: runs triggered stay queued until it is "
                    f"unpaused (its toggle in the UI, or PATCH /api/v2/dags/{dag_id} "
                    '{"is_paused": false})'
                )

    def restart(self, say: Callable[[str], None] = print, timeout: float = 180) -> None:
        """Kill every process of the stack and start them again on the same home and metadata
        database, as an operator restarting Airflow does; runs in flight carry on."""
        say(f"airflow: restarting {', '.join(self.processes)}")
        self.stop()
        self._launch(say, timeout)

    def _launch(self, say: Callable[[str], None], timeout: float) -> None:
        """Start the processes and wait until the api-server answers, the scheduler beats and
        both DAGs are parsed."""
        logs = self.home / "component-logs"
        logs.mkdir(exist_ok=True)
        commands = self._commands(self.env())
        for name, (args, env) in commands.items():
            log = (logs / f"{name}.log").open("ab")
            self.processes[name] = subprocess.Popen(
                [str(Path(sys.executable).parent / "airflow"), *args],
                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        say(f"airflow ({self.executor}): started {', '.join(commands)}; waiting for {self.url}")
        try:
            self.wait_until(
                self._healthy, timeout, "the api-server to answer and the scheduler to beat"
            )
            for dag_id in (DAG_ID, FLEET_DAG_ID):
                self.wait_until(
                    lambda dag_id=dag_id: self._dag_parsed(dag_id),
                    timeout,
                    f"the DAG {dag_id} to be parsed",
                )
        except BaseException:
            self.stop()  # never leave half a stack running
            raise

    def stop(self) -> None:
        for proc in self.processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.processes.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        self.processes.clear()

    def __enter__(self) -> AirflowStack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_until(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RolloutError(
                        f"airflow {name} exited ({proc.returncode}); see "
                        f"{self.home / 'component-logs' / (name + '.log')}"
                    )
            try:
                value = ready()
            except httpx.HTTPError:
                value = None
            if value:
                return value
            time.sleep(1)
        raise RolloutError(f"timed out after {timeout:.0f} s waiting for {what}")

    # --- REST API: what the UI does ----------------------------------------------------------

    def request(
        self, method: str, path: str, *, user: str = ADMIN_USER, **kwargs: Any
    ) -> httpx.Response:
        """A REST call as `user` (a token from /auth/token, as the UI's login gets one)."""
        if user not in self._tokens:
            response = httpx.post(
                f"{self.url}/auth/token",
                json={"username": user, "password": self.password_of(user)}, timeout=30,
            )  # fmt: skip
            response.raise_for_status()
            self._tokens[user] = response.json()["access_token"]
        headers = {"Authorization": f"Bearer {self._tokens[user]}"}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)

    def _healthy(self) -> bool:
        health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        return health.get("scheduler", {}).get("status") == "healthy"

    def _dag_parsed(self, dag_id: str) -> bool:
        response = self.request("GET", f"/api/v2/dags/{dag_id}")
        if response.status_code == 404:
            errors = self.request("GET", "/api/v2/importErrors").json().get("import_errors", [])
            if errors:
                raise RolloutError(
                    f"the DAG failed to import: {errors[0].get('stack_trace', '')[-1500:]}"
                )
            return False
        return response.status_code == 200

    def is_paused(self, dag_id: str = DAG_ID) -> bool:
        response = self.request("GET", f"/api/v2/dags/{dag_id}")
        response.raise_for_status()
        return response.json()["is_paused"]

    def trigger(self, conf: dict[str, Any], dag_id: str = DAG_ID) -> str:
        """A run, triggered as a user does (POST dagRuns): the DAG is left as it is, so a paused
        one is refused here rather than left queued."""
        if self.is_paused(dag_id):
            raise RolloutError(
                f"{dag_id} is paused: a run would stay queued; unpause it (its toggle in the UI, "
                f'or PATCH /api/v2/dags/{dag_id} {{"is_paused": false}}) and trigger again'
            )
        response = self.request(
            "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"conf": conf, "logical_date": None}
        )
        if response.status_code >= 400:
            raise RolloutError(f"trigger refused ({response.status_code}): {response.text}")
        return response.json()["dag_run_id"]

    def run_state(self, run_id: str, dag_id: str = DAG_ID) -> str:
        response = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return response.json()["state"]

    def task_states(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, str | None]:
        response = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        return {ti["task_id"]: ti["state"] for ti in response.json()["task_instances"]}

    def task_durations(self, run_id: str, dag_id: str = DAG_ID) -> dict[str, float | None]:
        """Seconds each task instance of the run took, as Airflow recorded them."""
        response = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")
        response.raise_for_status()
        return {ti["task_id"]: ti["duration"] for ti in response.json()["task_instances"]}

    def wait_for_task(
        self, run_id: str, task_id: str, states: tuple[str, ...], timeout: float = 300
    ) -> str:
        """Wait until a task of the run reaches one of `states`; fail at once, saying so, if the
        run ends first."""

        def reached() -> str | None:
            state = self.task_states(run_id).get(task_id)
            if state in states:
                return state
            if self.run_state(run_id) in FINISHED:
                raise RolloutError(
                    f"run {run_id} ended before {task_id} reached {'/'.join(states)}: "
                    f"{self.task_states(run_id)}"
                )
            return None

        return self.wait_until(reached, timeout, f"{task_id} to reach {'/'.join(states)}")

    def pending_approvals(self, run_id: str, dag_id: str = DAG_ID) -> list[dict]:
        """The run's gates waiting for a person, each with its task_instance (task_id,
        map_index): what the UI's Required Actions page lists."""
        response = self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/hitlDetails")
        response.raise_for_status()
        return [d for d in response.json()["hitl_details"] if not d.get("response_received")]

    def answer(self, run_id: str, option: str, task_id: str = "approve_production",
               dag_id: str = DAG_ID, map_index: int = -1, user: str = APPROVER) -> dict:  # fmt: skip
        """Exactly the call the UI's Required Actions page makes when a person clicks (by
        default the approver's: the admin triggers, four eyes approve)."""
        response = self.request(
            "PATCH",
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}"
            "/hitlDetails",
            json={"chosen_options": [option], "params_input": {}},
            user=user,
        )
        if response.status_code >= 400:
            raise RolloutError(
                f"the approval answer was refused ({response.status_code}): {response.text}"
            )
        return response.json()

    def gate_settled(
        self, run_id: str, task_id: str = "approve_production", dag_id: str = DAG_ID,
        map_index: int = -1,
    ) -> bool:  # fmt: skip
        """Whether the scheduler has processed the executor's "workload finished" event of a
        gate parked for input. Airflow 3.3 race, seen here: an answer that lands before it
        re-queues the task, and the late event then fails it ("finished with state success,
        but the task instance's state attribute is queued"). A person never clicks that fast;
        a program must wait for the event, which the scheduler's log records."""
        log = self.home / "component-logs" / "scheduler.log"
        if log.exists():
            with log.open("rb") as file:
                file.seek(self._scheduler_log_offset)
                chunk = file.read()
            end = chunk.rfind(b"\n") + 1  # whole lines only; the rest next time
            self._scheduler_log_offset += end
            for match in EXECUTOR_EVENT.finditer(chunk[:end].decode("utf-8", "replace")):
                dag, task, run, index = match.groups()
                self._processed_events.add((dag, task, run, int(index)))
        return (dag_id, task_id, run_id, map_index) in self._processed_events

    def answer_when_settled(
        self, run_id: str, option: str, task_id: str = "approve_production",
        dag_id: str = DAG_ID, map_index: int = -1, timeout: float = 120, user: str = APPROVER,
    ) -> dict:  # fmt: skip
        """Answer a gate once it is parked for input and the scheduler knows it (gate_settled)."""
        self.wait_until(
            lambda: self.gate_settled(run_id, task_id, dag_id, map_index), timeout,
            f"{task_id} of {run_id} to be parked for input",
        )  # fmt: skip
        return self.answer(run_id, option, task_id, dag_id, map_index, user)

    def required_actions_url(
        self, run_id: str, task_id: str = "approve_production", dag_id: str = DAG_ID
    ) -> str:
        return f"{self.url}/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/required_actions"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (an api-server's, a worker's log server's)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def connection_json(dsn: str) -> str:
    """An Airflow connection (JSON form) for a libpq DSN; its TLS parameters (sslmode,
    sslrootcert, sslcert, sslkey, ...) as the extras rollout.targets reads back."""
    from rollout.dsn import parse_dsn
    from rollout.targets import LIBPQ_EXTRAS

    params = parse_dsn(dsn)
    conn = {
        "conn_type": "postgres",
        "host": params.get("host"),
        "port": int(params["port"]) if params.get("port") else None,
        "login": params.get("user"),
        "password": params.get("password"),
        "schema": params.get("dbname"),
        "extra": {k: params[k] for k in LIBPQ_EXTRAS if params.get(k)} or None,
    }
    return json.dumps({k: v for k, v in conn.items() if v is not None})
