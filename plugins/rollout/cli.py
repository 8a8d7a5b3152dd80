"""`rollout` / `python -m rollout`: each step of the rollout by hand, against any DSN."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rollout import db, probes
from rollout.artifacts import ArtifactDir
from rollout.assignment import run_assignment_suite
from rollout.baseline import apply_baseline, has_baseline
from rollout.clusters import cluster_dsn, start_cluster, stop_cluster
from rollout.demo import DEFAULT_ALLOCATIONS, TARGETS, prepare_target
from rollout.diff import capture_db_diff, load_snapshot, save_snapshot
from rollout.dsn import check_dsn
from rollout.errors import RolloutError
from rollout.migrations import list_down_conflicts, load_bundle, run_check
from rollout.run import Run, default_session
from rollout.schema import snapshot_schema
from rollout.seed import seed_database, table_row_counts
from rollout.settings import PARAM_SCHEMA
from rollout.validation import validate_target


def _say(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def cmd_db(args: argparse.Namespace) -> int:
    names = args.names or list(TARGETS)
    for name in names:
        if args.action == "start":
            print(f"{name}: {start_cluster(name).dsn}")
        elif args.action == "stop":
            print(f"{name}: {'stopped' if stop_cluster(name) else 'was not running'}")
        else:
            print(f"{name}: {cluster_dsn(name) or 'not running'}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    if not args.prepare_only:
        from rollout.demo_rollout import run_demo

        conf = {
            "monitor_period_s": args.monitor_period,
            "regression_threshold": args.regression_threshold,
        }
        return run_demo(
            allocations=args.allocations, seed=args.seed, conf=conf, say=_say, fleet=args.fleet
        )
    _say(f"preparing {', '.join(TARGETS)} ({args.allocations:,} allocations each)")
    targets = [
        prepare_target(
            name, allocations=args.allocations, seed=args.seed, reset=args.reset, progress=_say
        )
        for name in TARGETS
    ]
    print()
    for target in targets:
        kind = "embedded PostgreSQL 18" if target.embedded else "from the environment"
        print(f"{target.name:<11} {target.dsn}   ({kind}, {target.allocations:,} allocations)")
    print("\nStop the embedded clusters with: make stop")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from rollout.demo_rollout import start_stack

    stack = start_stack(args.allocations, args.seed, reset=args.reset, say=_say, fleet=args.fleet)
    with stack:
        from rollout.airflow_stack import APPROVER

        print(f"\nAirflow UI: {stack.url}  (user admin, password {stack.password})")
        print(
            f'Trigger migration_rollout there with approvers ["{APPROVER}"], then log in as '
            f"{APPROVER} (password {stack.password_of(APPROVER)}) and approve it under Required "
            "Actions: four eyes, the person who triggers a run never approves it."
        )
        print("Ctrl-C stops Airflow (the databases keep running; make stop stops them).")
        try:
            while all(p.poll() is None for p in stack.processes.values()):
                time.sleep(2)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    with db.connect(args.dsn) as conn:
        if not has_baseline(conn):
            _say("applying the baseline schema")
            apply_baseline(conn)
        anchor = dt.date.fromisoformat(args.anchor) if args.anchor else None
        result = seed_database(conn, args.allocations, seed=args.seed, anchor=anchor, progress=_say)
    _say(f"seeded {result.allocations:,} allocations in {result.seconds:.1f} s")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    bundle = load_bundle(args.version)
    if args.action in ("up", "down"):
        return _migrate(args, bundle)
    with db.connect(args.dsn) as conn:
        if args.action == "verify":
            run_check(conn, bundle, f"verify_{args.state}")
            _say(f"{bundle.version}: database is in the {args.state} state")
        else:
            conflicts = list_down_conflicts(conn, bundle)
            for row in conflicts:
                print("\t".join(str(row[key]) for key in row))
            _say(f"{len(conflicts)} allocation pair(s) block the down")
    return 0


def _migrate(args: argparse.Namespace, bundle) -> int:
    """The up or the down by hand, exactly as the DAG's steps do it: the database's lease and
    rollout lock, the lock-retry mechanism, the ledger row in the change's transaction, the
    manifest's row rules, the export before a drop. A down undoes only what its own run
    applied: a version a DAG run applied is rolled back here only when named (--applied-by)."""
    import getpass
    import socket

    from rollout import steps
    from rollout.paths import STATE_DIR
    from rollout.settings import RolloutSettings

    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_id = f"cli__{stamp}_{getpass.getuser()}@{socket.gethostname()}"
    out = Path(args.out) if args.out else STATE_DIR / "cli" / run_id
    run = Run(
        settings=RolloutSettings.from_params(
            {
                "version": bundle.version,
                "lock_timeout_ms": args.lock_timeout_ms,
                "lock_retries": args.lock_retries,
                "retry_backoff_s": args.retry_backoff_s,
            }
        ),
        dsns={"target": args.dsn},
        artifacts=ArtifactDir(out),
        run_id=run_id,
        actor=getpass.getuser(),
        progress=_say,
        session=default_session(),
    )
    try:
        if args.action == "up":
            result = steps.apply_target(run, "target")
            if result["noop"]:
                _say(f"{bundle.version}: nothing to do ({result['state']})")
            return 0
        applied_by = args.applied_by or _cli_owner(run, bundle)
        result = steps.rollback_target(run, "target", applied_by=applied_by)
        if result["action"] == "not_owned":
            print(
                f"rollout: {bundle.version} was applied by run {result['applied_by']}; a rollback "
                "undoes only the work of the run it names. To roll it back by hand, deliberately: "
                f"rollout migrate down --dsn … --applied-by {result['applied_by']}",
                file=sys.stderr,
            )
            return 1
        if result["action"] == "rolled_back":
            _say(f"rolled back; exports and reports in {out}")
        return 0
    finally:
        steps.release_leases(run, ["target"])


def _cli_owner(run, bundle) -> str | None:
    """The run that applied the version, when it was the CLI's own (a person's `migrate up`):
    by hand, what was applied by hand is rolled back without naming it; a DAG run's work must
    be named (--applied-by)."""
    from rollout import ledger

    with run.connect("target", "status") as conn:
        state = ledger.version_state(conn, bundle.version)
    return state.run_id if state.applied and (state.run_id or "").startswith("cli__") else None


def cmd_bundle(args: argparse.Namespace) -> int:
    """`bundle check [VERSION|PATH]`: what a bundle lacks, each as what to fix (exit 1), or that
    it is ready; then Squawk's findings with the rollout's notes; `bundle import FILE`: a bundle scaffold from a Supabase migration file."""
    from rollout.authoring import check_bundle, import_supabase, lint_lines
    from rollout.migrations import MigrationBundle

    if args.action == "import":
        if not args.target:
            raise RolloutError("bundle import needs the Supabase file: supabase/migrations/<…>.sql")
        into = Path(args.into) if args.into else None
        bundle = import_supabase(Path(args.target), *([into] if into else []))
        print(f"imported into {bundle.path}; complete it:")
        for problem in check_bundle(bundle):
            print(f"  - {problem}")
        return 0
    target = args.target
    if target and Path(target).is_dir():
        path = Path(target)
        bundle = MigrationBundle(path.name[:14], path.name[15:], path)
    else:
        bundle = load_bundle(target)
    problems = check_bundle(bundle)
    for problem in problems:
        print(f"{bundle.path.name}: {problem}")
    if not problems:
        print(f"{bundle.path.name}: ready")
    for line in lint_lines(bundle):  # warnings: they never make a bundle not ready
        print(line)
    return 1 if problems else 0


def cmd_lease(args: argparse.Namespace) -> int:
    """Who holds a target's lease, or give back one a run left behind (a run killed before its
    report). Releasing names the run, so a lease another run took meanwhile is never freed."""
    from rollout import ledger
    from rollout.status import target_dsn

    if args.action == "release" and not args.run:
        raise RolloutError("lease release needs --run <run id> (`rollout lease show` names it)")
    dsn = target_dsn(args.target)
    with db.connect(dsn, application_name="rollout-lease", session_only=True) as conn:
        holder = ledger.lease_holder(conn)
        if args.action == "show":
            print(f"{args.target}: " + (f"held by {holder.describe()}" if holder else "free"))
            return 0
        if holder is None:
            _say(f"{args.target}: no lease to release")
            return 0
        if holder.run_id != args.run:
            raise RolloutError(
                f"{args.target}: the lease is held by {holder.describe()}, not by run {args.run}; "
                "nothing released"
            )
        ledger.release_lease(conn, args.run)
    _say(f"{args.target}: lease of run {args.run} released")
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    out = ArtifactDir(Path(args.out))
    with db.connect(args.dsn) as conn:
        save_snapshot(snapshot_schema(conn), out, "schema-snapshot.json")
        out.write_json("row-counts.json", table_row_counts(conn))
    _say(f"schema snapshot and row counts written to {args.out}")
    return 0


def _snapshot_of(source: str):
    """A saved capture folder or snapshot file, or a DSN to read now."""
    path = Path(source)
    if path.is_dir():
        path = path / "schema-snapshot.json"
    if path.is_file():
        return load_snapshot(path)
    with db.connect(source) as conn:  # main checked it parses, naming its flag
        return snapshot_schema(conn)


def cmd_diff(args: argparse.Namespace) -> int:
    diff = capture_db_diff(
        _snapshot_of(args.before), _snapshot_of(args.after), args.out,
        before_label=args.before_label, after_label=args.after_label,
    )  # fmt: skip
    _say(f"db-diff: {diff.summary()} -> {Path(args.out) / 'db-diff.txt'}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    counts = None
    if args.before:
        counts = json.loads((Path(args.before) / "row-counts.json").read_text())
    version = load_bundle(args.version).expectations_key
    report = validate_target(
        args.dsn, version, args.phase, args.out, target=args.label, row_counts=counts
    )
    _say(
        f"{args.phase}: {'passed' if report.success else 'FAILED'}; report in {Path(args.out) / 'validation-report.md'}"
    )
    for failure in report.failures:
        print(f"  - {failure}")
    return 0 if report.success else 1


def cmd_assignment(args: argparse.Namespace) -> int:
    result = run_assignment_suite(args.dsn, args.out)
    _say(f"assignment suite: {result.line()}; report in {Path(args.out) / 'assignment-report.md'}")
    for failure in result.failures:
        print(f"  - {failure}")
    return 0 if result.success else 1


def cmd_probes(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if args.action == "baseline":
        probes.baseline(
            args.dsn, out, samples=args.samples, repetitions=args.repetitions, progress=_say
        )
        _say(f"baseline written to {out / 'perf-baseline.json'} (report: perf-baseline.md)")
        return 0
    if not args.baseline:
        raise RolloutError("probes monitor needs --baseline <perf-baseline.json>")
    comparison = probes.monitor(
        args.dsn, args.baseline, args.period, args.threshold, out, progress=_say
    )
    _say(f"{comparison.line()}; report in {out / 'perf-monitor.md'}")
    return 0 if comparison.ok else 1


def cmd_status(args: argparse.Namespace) -> int:
    from rollout.status import read_status, render_json, render_table, require

    statuses = [read_status(target) for target in args.target]
    if args.require:
        reasons = [r for s in statuses if (r := require(s, args.require))]
        if args.json:
            print(render_json(statuses))
        for reason in reasons:
            print(f"rollout status: {reason}", file=sys.stderr)
        return 1 if reasons else 0
    print(render_json(statuses) if args.json else render_table(statuses))
    return 0 if all(s.has_ledger for s in statuses) else 1


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 1:
        raise argparse.ArgumentTypeError(f"{text!r}: a threshold is a ratio above 1, e.g. 2")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} cannot be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rollout", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("db", help="start, stop or show the embedded clusters")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("names", nargs="*", help=f"cluster names (default: {' '.join(TARGETS)})")
    p.set_defaults(func=cmd_db)

    p = sub.add_parser(
        "demo", help="the whole rollout on embedded staging and production, run by Airflow"
    )
    p.add_argument("--allocations", type=_positive_int, default=DEFAULT_ALLOCATIONS)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--reset", action="store_true", help="drop the embedded demo databases first")
    p.add_argument(
        "--prepare-only", action="store_true", help="only start and seed the two databases"
    )
    p.add_argument("--monitor-period", type=int, default=20, help="seconds of monitoring")
    p.add_argument(
        "--fleet",
        type=int,
        default=0,
        help="roll out to this many production databases in waves (the fleet_rollout DAG)",
    )
    p.add_argument(
        "--regression-threshold",
        type=_ratio,
        default=probes.DEFAULT_THRESHOLD,
        help="median after/before (server time against a control) beyond which a probe "
        "counts as regressed",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("up", help="the demo databases and a local Airflow UI to run it by hand")
    p.add_argument("--allocations", type=_positive_int, default=DEFAULT_ALLOCATIONS)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--reset", action="store_true", help="drop the embedded demo databases first")
    p.add_argument("--fleet", type=int, default=0, help="also this many fleet_N databases")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("seed", help="fill an empty database (baseline applied if missing)")
    p.add_argument("--dsn", required=True)
    p.add_argument("--allocations", type=_positive_int, required=True)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--anchor", help="date the 90 days are laid around (default: today)")
    p.set_defaults(func=cmd_seed)

    p = sub.add_parser("migrate", help="apply, verify or check a migration bundle by hand")
    p.add_argument("action", choices=["up", "down", "verify", "down-conflicts"])
    p.add_argument("--dsn", required=True)
    p.add_argument("--version", help="bundle version (default: the newest)")
    p.add_argument("--state", choices=["up", "down"], default="up", help="with verify")
    p.add_argument(
        "--applied-by", metavar="RUN_ID",
        help="down: roll back a version another run applied (its run id, as the ledger says)",
    )  # fmt: skip
    p.add_argument("--out", help="up/down: folder for exports and reports (default .rollout/cli/…)")
    for name, (default, _, doc) in PARAM_SCHEMA.items():
        if name in ("lock_timeout_ms", "lock_retries", "retry_backoff_s"):
            kind = float if isinstance(default, float) else int
            p.add_argument(f"--{name.replace('_', '-')}", type=kind, default=default, help=doc)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser(
        "bundle", help="check a bundle (ready to run?), or import a Supabase migration file"
    )
    p.add_argument("action", choices=["check", "import"])
    p.add_argument(
        "target", nargs="?",
        help="check: a version or a bundle folder (default: the newest); import: the file",
    )  # fmt: skip
    p.add_argument("--into", help="import: the bundles folder (default sql/migrations)")
    p.set_defaults(func=cmd_bundle)

    p = sub.add_parser(
        "lease", help="show who holds a target (one rollout at a time), or release a stale lease"
    )
    p.add_argument("action", choices=["show", "release"])
    p.add_argument(
        "--target", required=True, help="a DSN, or an Airflow connection id (AIRFLOW_CONN_<ID>)"
    )
    p.add_argument("--run", help="release: the run id that holds the lease (as `show` says)")
    p.set_defaults(func=cmd_lease)

    p = sub.add_parser(
        "capture", help="save a target's schema snapshot and row counts (a 'before')"
    )
    p.add_argument("--dsn", required=True)
    p.add_argument("--out", required=True, help="folder to write into")
    p.set_defaults(func=cmd_capture)

    p = sub.add_parser("diff", help="write db-diff.txt between two databases or captures")
    p.add_argument("--before", required=True, help="a DSN, a capture folder or a snapshot file")
    p.add_argument("--after", required=True, help="a DSN, a capture folder or a snapshot file")
    p.add_argument("--out", required=True)
    p.add_argument("--before-label", default="before")
    p.add_argument("--after-label", default="after")
    p.set_defaults(func=cmd_diff)

    p = sub.add_parser("validate", help="GX suite and catalog checks; exits 1 when anything fails")
    p.add_argument("--dsn", required=True)
    p.add_argument("--phase", choices=["pre_migration", "post_migration"], required=True)
    p.add_argument(
        "--before",
        help="capture folder with row-counts.json: exact row counts (where nobody writes)",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--version", help="bundle version (default: the newest)")
    p.add_argument("--label", default="target", help="the target's name in the report")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("assignment", help="run the assignment suite against a migrated target")
    p.add_argument("--dsn", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_assignment)

    p = sub.add_parser(
        "probes",
        help="time the allocation queries (baseline) or compare with a baseline (monitor); "
        "monitor exits 1 on a regression",
    )
    p.add_argument("action", choices=["baseline", "monitor"])
    p.add_argument("--dsn", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--baseline", help="perf-baseline.json (monitor)")
    p.add_argument("--samples", type=_positive_int, default=probes.DEFAULT_SAMPLES)
    p.add_argument("--repetitions", type=_positive_int, default=probes.DEFAULT_REPETITIONS)
    p.add_argument("--period", type=_seconds, default=60.0, help="seconds to sample (monitor)")
    p.add_argument("--threshold", type=_ratio, default=probes.DEFAULT_THRESHOLD)
    p.set_defaults(func=cmd_probes)

    p = sub.add_parser(
        "status",
        help="each target's ledger and whether the bundles on disk match it; "
        "--require VERSION exits 0 only when it is applied with a matching checksum",
    )
    p.add_argument(
        "--target", action="append", required=True,
        help="a DSN, or an Airflow connection id (read from AIRFLOW_CONN_<ID>); repeatable",
    )  # fmt: skip
    p.add_argument("--require", metavar="VERSION")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    return parser


def _interrupt_on_sigterm() -> None:
    """A SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the Airflow processes the
    command started are stopped on the way out instead of left running."""

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _check_dsn_flags(args: argparse.Namespace) -> None:
    """Every connection string given on the command line parses, before anything is touched;
    one that does not is one line naming its flag (MalformedDsn)."""
    if getattr(args, "dsn", None) is not None:
        check_dsn(args.dsn, "--dsn")
    for flag in ("before", "after"):  # diff: a capture folder, a snapshot file or a DSN
        given = getattr(args, flag, None)
        if args.command == "diff" and given is not None and not Path(given).exists():
            check_dsn(given, f"--{flag}")
    if args.command in ("status", "lease"):
        from rollout.status import target_dsn

        for target in args.target if isinstance(args.target, list) else [args.target]:
            target_dsn(target, "--target")


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    _interrupt_on_sigterm()
    args = build_parser().parse_args(argv)
    try:
        _check_dsn_flags(args)
        return args.func(args)
    except RolloutError as exc:
        print(f"rollout: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rollout: interrupted", file=sys.stderr)
        return 130
