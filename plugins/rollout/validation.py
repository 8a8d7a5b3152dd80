"""Great Expectations suites against a target, pushed down to the database.

Suites are files in ``expectations/<version>/<suite>.json``: per table, a list of GX Core
expectations (``type``, ``kwargs``, ``description``). A kwarg ``{"$file": "sql/x.sql"}`` is
replaced by that file's text, so SQL stays in .sql files; ``{"$PARAMETER": "…"}`` is GX's own
suite parameter, given at run time (e.g. the row counts taken before the apply).

We call GX Core from our own module rather than through airflow-provider-great-expectations:
the provider's Airflow 3 support is not stated and its DataFrame operator runs at parse time
(verified-notes.md).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rollout.artifacts import ArtifactDir, as_artifact_dir
from rollout.catalog import CatalogCheck, run_catalog_checks
from rollout.dsn import parse_dsn
from rollout.errors import RolloutError
from rollout.paths import PROJECT_ROOT
from rollout.secrets import remember_dsn

log = logging.getLogger(__name__)
EXPECTATIONS_DIR = PROJECT_ROOT / "expectations"


def suites_folder(suites: str | Path) -> Path:
    """A bundle's suites: a folder, or a version's folder under expectations/."""
    return suites if isinstance(suites, Path) else EXPECTATIONS_DIR / suites


# Before GX is imported: no usage statistics, nothing fetched from the network.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class ValidationSummary:
    suite: str
    success: bool
    evaluated: int
    successful: int
    failed: list[str] = field(default_factory=list)
    data_docs: str = ""
    seconds: float = 0.0

    def line(self) -> str:
        verdict = "passed" if self.success else f"FAILED ({'; '.join(self.failed)})"
        return f"{self.suite}: {self.successful}/{self.evaluated} expectations met, {verdict}"


def row_count_expectations(counts: dict[str, int]) -> dict[str, list[dict[str, Any]]]:
    """Exact row counts as expectations, per table: "nothing lost" where nobody writes (staging,
    the demo). On a live production the application's writes make counts taken before the apply
    meaningless; there the apply's own transaction counts what the migration did."""
    return {
        table: [
            {
                "type": "expect_table_row_count_to_equal",
                "kwargs": {"value": n},
                "description": f"{table} has as many rows as before the apply",
            }
        ]
        for table, n in counts.items()
    }


# The parameters a run gives its suites (steps.validate): none. Row counts taken before the
# apply are the runner's own expectations (row_counts), added only where nobody writes: on a
# live production such counts prove nothing, so no suite may ask for them.
RUN_PARAMETERS: tuple[str, ...] = ()


def suite_parameters(spec: dict[str, Any]) -> list[str]:
    """Every parameter a loaded suite needs: those it declares and those its kwargs name
    ({"$PARAMETER": …})."""
    named: set[str] = set(spec.get("parameters") or [])

    def collect(value: Any) -> None:
        if isinstance(value, dict):
            if set(value) == {"$PARAMETER"}:
                named.add(str(value["$PARAMETER"]))
            for item in value.values():
                collect(item)
        elif isinstance(value, list):
            for item in value:
                collect(item)

    collect(spec.get("tables"))
    return sorted(named)


def build_expectation(expectation: dict[str, Any]) -> Any:
    """The GX expectation a suite's entry describes (GX refuses an unknown type or kwargs)."""
    from great_expectations.expectations.registry import get_expectation_impl

    return get_expectation_impl(expectation["type"])(
        **expectation["kwargs"], description=expectation.get("description")
    )


def suite_problems(folder: Path) -> list[str]:
    """What a run, or `rollout validate`, would fail on in the suites of `folder` before any
    expectation is evaluated, each as `<file>: what to fix`: a suite that does not load as a
    run loads it, an entry GX refuses, a parameter the runner never supplies."""
    from great_expectations.exceptions import GreatExpectationsError
    from pydantic.v1 import ValidationError

    supplied = ", ".join(RUN_PARAMETERS) or "none"
    problems = []
    for path in sorted(p for p in folder.glob("*.json") if not p.name.startswith("catalog_")):
        try:
            spec = load_suite(path)
            tables = dict(spec["tables"])
            if not isinstance(spec["suite"], str):
                raise TypeError('"suite" must be its name')
        except (OSError, ValueError, KeyError, TypeError) as exc:
            problems.append(
                f"{path.name} does not load ({type(exc).__name__}: {exc}): a suite is JSON with "
                '"suite", "tables" and files named by {"$file": …} beside it'
            )
            continue
        for table, expectations in tables.items():
            for number, expectation in enumerate(expectations, 1):
                try:
                    build_expectation(expectation)
                except (GreatExpectationsError, ValidationError, KeyError, TypeError) as exc:
                    why = " ".join(str(exc).split())
                    problems.append(
                        f"{path.name}: {table} expectation {number} "
                        f"({expectation.get('type', 'no type')}) is refused by GX: {why}"
                    )
        unsupplied = [p for p in suite_parameters(spec) if p not in RUN_PARAMETERS]
        if unsupplied:
            problems.append(
                f"{path.name} asks for parameters a run never supplies: {', '.join(unsupplied)} "
                f"(a run supplies: {supplied}; exact row counts are the runner's own, added "
                "where nobody writes: remove them from the suite)"
            )
    return problems


def suite_path(version: str | Path, suite: str) -> Path:
    """The suite file `suite` of a version (or of a folder of suites)."""
    path = suites_folder(version) / f"{suite}.json"
    if not path.is_file():
        raise RolloutError(
            f"no expectation suite {suite!r} for version {version} (looked for {path})"
        )
    return path


def load_suite(path: Path) -> dict[str, Any]:
    """The suite file with every {"$file": …} replaced by the file's text."""
    spec = json.loads(path.read_text(encoding="utf-8"))

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"$file"}:
            return (path.parent / value["$file"]).read_text(encoding="utf-8")
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    return resolve(spec)


# What sqlalchemy_url carries; connect_args carries every other libpq parameter.
URL_PARAMS = ("host", "port", "user", "dbname")


def connect_args(dsn: str) -> dict[str, str]:
    """The DSN's parameters a SQLAlchemy URL does not carry (the password, TLS's sslmode,
    sslrootcert, sslcert, sslkey, options, ...): handed to psycopg.connect as they are, so
    Great Expectations connects exactly as the DSN says, and never repeats them in a URL."""
    return {k: v for k, v in parse_dsn(dsn).items() if k not in URL_PARAMS}


def sqlalchemy_url(dsn: str) -> str:
    """The DSN's server, user and database as a SQLAlchemy URL for psycopg 3 (a socket
    directory goes in the query); the rest goes in connect_args."""
    from sqlalchemy.engine import URL

    params = parse_dsn(dsn)
    host = params.get("host") or None
    query = {}
    if host and host.startswith("/"):
        query["host"], host = host, None
    return URL.create(
        "postgresql+psycopg",
        username=params.get("user"),
        host=host,
        port=int(params["port"]) if params.get("port") else None,
        database=params.get("dbname"),
        query=query,
    ).render_as_string(hide_password=False)


def run_suite(
    dsn: str,
    path: Path,
    artifacts: ArtifactDir | Path | str,
    parameters: dict[str, Any] | None = None,
    *,
    row_counts: dict[str, int] | None = None,
    data_docs: bool = True,
    tables: list[str] | None = None,
) -> ValidationSummary:
    """Validate the target against one suite file (plus, with `row_counts`, an exact row count
    per table); write a summary JSON, and Data Docs unless `data_docs` is False (rendering
    them costs more than the expectations: a fleet renders them for its canary only). With
    `tables`, only those tables' expectations (before the apply, the new tables are not there)."""
    spec = load_suite(path)
    if tables is not None:
        spec["tables"] = {t: e for t, e in spec["tables"].items() if t in tables}
    for table, expectations in row_count_expectations(row_counts or {}).items():
        spec["tables"][table] = [*spec["tables"].get(table, []), *expectations]
    parameters = dict(parameters or {})
    missing = [p for p in suite_parameters(spec) if p not in parameters]
    if missing:
        raise RolloutError(
            f"suite {spec['suite']} needs parameters it was not given: {', '.join(missing)} "
            f"(given: {', '.join(parameters) or 'none'}; `rollout bundle check` finds this "
            "before a run)"
        )
    out = as_artifact_dir(artifacts)
    started = time.perf_counter()

    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from great_expectations.datasource.fluent.sql_datasource import GxDatasourceWarning

    with tempfile.TemporaryDirectory() as docs_dir:
        context = gx.get_context(mode="ephemeral")
        # Task logs get our one summary line, not a progress bar per table.
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        if data_docs:
            context.add_data_docs_site(
                site_name="rollout",
                site_config={
                    "class_name": "SiteBuilder",
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                    "store_backend": {
                        "class_name": "TupleFilesystemStoreBackend",
                        "base_directory": docs_dir,
                    },
                },
            )
        with warnings.catch_warnings():
            # add_postgres would be the specific choice, but it rejects socket-directory URLs
            # (the embedded clusters'); the generic SQL source runs the same SQL.
            warnings.simplefilter("ignore", GxDatasourceWarning)
            # The password and TLS's files as connection arguments, not in the URL GX may
            # repeat somewhere (remember_dsn: scrubbed from whatever it writes anyway).
            remember_dsn(dsn)
            extra = connect_args(dsn)
            source = context.data_sources.add_sql(
                "target",
                connection_string=sqlalchemy_url(dsn),
                kwargs={"connect_args": extra} if extra else {},
            )
        definitions = []
        for table, expectations in spec["tables"].items():
            batch = source.add_table_asset(table, table_name=table)
            suite = context.suites.add(
                gx.ExpectationSuite(
                    name=f"{spec['suite']}.{table}",
                    expectations=[build_expectation(e) for e in expectations],
                )
            )
            definitions.append(
                context.validation_definitions.add(
                    gx.ValidationDefinition(
                        name=f"{spec['suite']}.{table}",
                        data=batch.add_batch_definition_whole_table("whole table"),
                        suite=suite,
                    )
                )
            )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=spec["suite"],
                validation_definitions=definitions,
                actions=(
                    [UpdateDataDocsAction(name="data_docs", site_names=["rollout"])]
                    if data_docs
                    else []
                ),
                result_format={"result_format": "SUMMARY", "partial_unexpected_count": 20},
            )
        )
        result = checkpoint.run(expectation_parameters=parameters)

        evaluated = successful = 0
        failed: list[str] = []
        details = []
        for run in result.run_results.values():
            table = run.meta.get("active_batch_definition", {}).get("data_asset_name", "?")
            for item in run.results:
                evaluated += 1
                config = item.expectation_config
                label = f"{table}: {config.description or config.type}"
                error = _error(item.exception_info)
                successful += bool(item.success)
                if not item.success:
                    failed.append(f"{label} (could not run: {error})" if error else label)
                kwargs = {k: v for k, v in (config.kwargs or {}).items() if k != "batch_id"}
                details.append(
                    {
                        "table": table,
                        "expectation": config.type,
                        "description": config.description,
                        "success": item.success,
                        "observed": _observed(item.result),
                        "expected": describe_expected(config.type, kwargs),
                        "query": kwargs.get("unexpected_rows_query"),
                        "error": error,
                    }
                )
        docs_root = Path(docs_dir)
        for file in sorted(p for p in docs_root.rglob("*") if p.is_file()):
            out.write_bytes(
                f"data-docs/{file.relative_to(docs_root).as_posix()}", file.read_bytes()
            )

    summary = ValidationSummary(
        suite=spec["suite"],
        success=bool(result.success),
        evaluated=evaluated,
        successful=successful,
        failed=failed,
        data_docs="data-docs/index.html" if data_docs else "",
        seconds=round(time.perf_counter() - started, 2),
    )
    out.write_json(f"validation-{spec['suite']}.json", {**asdict(summary), "expectations": details})
    log.info("%s", summary.line())
    return summary


def describe_expected(kind: str, kwargs: dict[str, Any]) -> str:
    """What an expectation expects, in a few words: the review page shows it beside what was
    observed ("event_type in {booking.created, …}", "3,000 rows", "no rows from its query")."""
    column = kwargs.get("column")
    if kind == "unexpected_rows_expectation":
        return "no rows from its query"
    if kind == "expect_table_row_count_to_equal":
        value = kwargs.get("value")
        return f"{value:,} rows" if isinstance(value, int) else f"{value} rows"
    if kind == "expect_table_row_count_to_be_between":
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        return f"between {low if low is not None else '-'} and {high if high is not None else '-'} rows"
    if kind == "expect_column_values_to_not_be_null":
        return f"{column} never null"
    if kind == "expect_column_values_to_be_unique":
        return f"{column} unique"
    if kind == "expect_column_values_to_be_in_set":
        values = ", ".join(str(v) for v in kwargs.get("value_set") or [])
        return f"{column} in {{{values}}}"
    return ", ".join(f"{k}={v}" for k, v in kwargs.items())


def _observed(result: dict[str, Any]) -> Any:
    if "observed_value" in result:
        return result["observed_value"]
    return {k: result[k] for k in ("unexpected_count", "partial_unexpected_list") if k in result}


def _error(exception_info: dict[str, Any] | None) -> str | None:
    """The first line of the database's error when an expectation could not be computed."""
    for info in (exception_info or {}).values():
        if isinstance(info, dict) and info.get("raised_exception"):
            return str(info.get("exception_message", "")).splitlines()[0]
    if (exception_info or {}).get("raised_exception"):
        return str(exception_info.get("exception_message", "")).splitlines()[0]
    return None


@dataclass(frozen=True)
class ValidationReport:
    phase: str
    gx: ValidationSummary
    catalog: list[CatalogCheck]
    # Each expectation against the target before the apply (rollout.preexisting), or None:
    # judged as it is (staging, a check without a "before").
    judged: list[Any] | None = None

    @property
    def gx_success(self) -> bool:
        if self.judged is None:
            return self.gx.success
        return not any(j.the_migrations for j in self.judged)

    @property
    def success(self) -> bool:
        return self.gx_success and all(c.passed for c in self.catalog)

    @property
    def failures(self) -> list[str]:
        failed = (
            self.gx.failed
            if self.judged is None
            else [j.line() for j in self.judged if j.the_migrations]
        )
        return failed + [f"catalog: {c.name} ({c.detail})" for c in self.catalog if not c.passed]

    @property
    def preexisting(self) -> list[str]:
        """Violations production had before the apply, no worse after: reported, not failed."""
        return [j.line() for j in self.judged or [] if j.verdict == "pre-existing"]

    def markdown(self, target: str) -> str:
        verdict = "passed" if self.success else "FAILED"
        lines = [
            f"# Validation of {target}: {self.phase} — {verdict}",
            "",
            f"- Great Expectations: {self.gx.successful}/{self.gx.evaluated} expectations met"
            + (f" ([Data Docs]({self.gx.data_docs}), " if self.gx.data_docs else " (")
            + f"{self.gx.seconds:.1f} s)",
        ]
        if self.catalog:
            passed = sum(c.passed for c in self.catalog)
            lines.append(f"- Catalog checks: {passed}/{len(self.catalog)} passed")
        if self.failures:
            lines += ["", "## Failed", ""] + [f"- {f}" for f in self.failures]
        lines += self._preexisting_markdown()
        if self.catalog:
            lines += ["", "## Catalog checks", "", "| check | result | found |", "|---|---|---|"]
            lines += [f"| {c.name} | {'ok' if c.passed else 'FAILED'} | {c.detail.replace('|', '/')} |"
                      for c in self.catalog]  # fmt: skip
        return "\n".join(lines) + "\n"

    def _preexisting_markdown(self) -> list[str]:
        if self.judged is None:
            return []
        lines = ["", "## Judged against the target before the apply", ""]
        if not self.preexisting:
            return [*lines, "No violation was there before the apply."]
        return [
            *lines,
            "Already there before the apply and no worse after (accepted on the approval, not "
            "the migration's):",
            "",
            *(f"- {p}" for p in self.preexisting),
        ]


def validate_target(
    dsn: str,
    version: str | Path,
    phase: str,
    artifacts: ArtifactDir | Path | str,
    parameters: dict[str, Any] | None = None,
    *,
    target: str = "target",
    row_counts: dict[str, int] | None = None,
    extra_checks: list[CatalogCheck] | None = None,
    data_docs: bool = True,
    before: list[dict[str, Any]] | None = None,
    at_gate: list[dict[str, Any]] | None = None,
) -> ValidationReport:
    """The GX suite of the phase plus, where the bundle has one, its catalog checks, and any
    checks the caller made (the apply's own row effects); one report (validation-report.md).
    With `before` (each expectation's result on the target before the apply, `at_gate` when
    the approver was asked), an expectation fails only on what is new or worse than before
    (rollout.preexisting); the catalog checks stay absolute."""
    from rollout import preexisting
    from rollout.db import connect

    out = as_artifact_dir(artifacts)
    gx_summary = run_suite(
        dsn, suite_path(version, phase), out, parameters, row_counts=row_counts,
        data_docs=data_docs,
    )  # fmt: skip
    catalog_spec = suites_folder(version) / f"catalog_{phase}.json"
    catalog: list[CatalogCheck] = list(extra_checks or [])
    if catalog_spec.is_file():
        with connect(dsn) as conn:
            catalog += run_catalog_checks(conn, catalog_spec)
    judged = None
    if before is not None:
        after = preexisting.read_details(out, gx_summary.suite)
        judged = preexisting.judge(after, before, at_gate)
    report = ValidationReport(phase, gx_summary, catalog, judged)
    out.write_text("validation-report.md", report.markdown(target))
    out.write_json(
        "validation-report.json",
        {"phase": phase, "success": report.success, "failures": report.failures,
         "gx": asdict(gx_summary), "catalog": [asdict(c) for c in catalog],
         **({"judged": preexisting.judgements_json(judged), "preexisting": report.preexisting}
            if judged is not None else {})},
    )  # fmt: skip
    return report
