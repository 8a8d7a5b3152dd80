"""Catalog checks beside GX: what the schema must look like, read from the catalog.

The expected state is a reviewed file, ``expectations/<version>/catalog_<phase>.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg.rows import dict_row

from rollout.paths import CATALOG_DIR, sql_text

# Every privilege a table can carry. MAINTAIN exists from PostgreSQL 17 on (GRANT ALL gives
# it there), so a spec names it and older servers skip it.
TABLE_PRIVILEGES = (
    "SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER", "MAINTAIN",
)  # fmt: skip
MAINTAIN_SINCE = 170000
FUNCTION_PRIVILEGES = ("EXECUTE",)


def table_privileges(conn: psycopg.Connection) -> tuple[str, ...]:
    """The table privileges this server knows."""
    if conn.info.server_version >= MAINTAIN_SINCE:
        return TABLE_PRIVILEGES
    return tuple(p for p in TABLE_PRIVILEGES if p != "MAINTAIN")


@dataclass(frozen=True)
class CatalogCheck:
    name: str
    passed: bool
    detail: str


def _one(conn: psycopg.Connection, file: str, params: dict) -> list[dict]:
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(sql_text(CATALOG_DIR / file), params).fetchall()


def run_catalog_checks(conn: psycopg.Connection, spec_path: Path) -> list[CatalogCheck]:
    spec = json.loads(spec_path.read_text(encoding="utf-8"))
    checks: list[CatalogCheck] = []

    def check(name: str, passed: bool, detail: str) -> None:
        checks.append(CatalogCheck(name, passed, detail))

    for want in spec.get("constraints", []):
        label = f"constraint {want['table']}.{want['name']}"
        rows = _one(conn, "constraint_facts.sql", {"table": want["table"], "name": want["name"]})
        if not rows:
            check(f"{label} exists", False, "missing")
            continue
        got = rows[0]
        check(f"{label} definition", got["definition"] == want["definition"], got["definition"])
        mode = (got["deferrable"], got["initially_deferred"])
        check(f"{label} deferrability", mode == (want["deferrable"], want["initially_deferred"]),
              f"deferrable={mode[0]}, initially deferred={mode[1]}")  # fmt: skip
        if "predicate" in want:
            check(
                f"{label} predicate", got["predicate"] == want["predicate"], str(got["predicate"])
            )

    for gone in spec.get("absent", []):
        if gone["kind"] == "constraint":
            present = bool(
                _one(conn, "constraint_facts.sql", {"table": gone["table"], "name": gone["name"]})
            )
            label = f"constraint {gone['table']}.{gone['name']} is gone"
        else:
            present = conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL", (gone["name"],)
            ).fetchone()[0]
            label = f"{gone['kind']} {gone['name']} is gone"
        check(label, not present, "still present" if present else "absent")

    for kept in spec.get("present", []):
        present = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (kept["name"],)).fetchone()[0]
        check(
            f"{kept['kind']} {kept['name']} is kept", present, "present" if present else "missing"
        )

    for want in spec.get("row_level_security", []):
        rows = _one(conn, "policy_facts.sql", {"table": want["table"], "policy": want["policy"]})
        got = rows[0] if rows else {}
        check(f"row level security on {want['table']}", bool(got.get("rls_enabled")),
              "enabled" if got.get("rls_enabled") else "disabled or table missing")  # fmt: skip
        expressions = f"{got.get('using_expression')} / {got.get('check_expression')}"
        ok = (
            bool(got.get("policy_present"))
            and sorted(got.get("roles") or []) == sorted(want["roles"])
            and want["expression_contains"] in (got.get("using_expression") or "")
            and want["expression_contains"] in (got.get("check_expression") or "")
        )
        check(
            f"policy {want['policy']}", ok, f"roles {got.get('roles')}, using/check {expressions}"
        )

    # Grants are exact: an entry names every privilege its object can carry on this server,
    # each as allowed or denied, so a privilege nobody thought of cannot slip through.
    grant_kinds = [
        ("grants", "table", TABLE_PRIVILEGES, table_privileges(conn),
         "SELECT has_table_privilege(%s, to_regclass(%s), %s)"),
        ("function_grants", "function", FUNCTION_PRIVILEGES, FUNCTION_PRIVILEGES,
         "SELECT has_function_privilege(%s, to_regprocedure(%s), %s)"),
    ]  # fmt: skip
    for section, kind, every, known, query in grant_kinds:
        for want in spec.get(section, []):
            target, role = want[kind], want["role"]
            named = want["allowed"] + want["denied"]
            unnamed = [p for p in every if p not in named]
            strange = [p for p in named if p not in every]
            if unnamed or strange:
                detail = "; ".join(
                    f"{label}: {', '.join(privileges)}"
                    for label, privileges in (("neither allowed nor denied", unnamed),
                                              ("no such privilege", strange))
                    if privileges
                )  # fmt: skip
                check(f"every privilege of {role} on {target} is specified", False, detail)
            for privilege in (p for p in named if p in known):
                has = conn.execute(  # NULL when the object is missing
                    query, ("public" if role == "PUBLIC" else role, target, privilege)
                ).fetchone()[0]
                expected = privilege in want["allowed"]
                verb = "may" if expected else "may not"
                detail = f"{kind} missing" if has is None else ("granted" if has else "not granted")
                check(f"{role} {verb} {privilege} {target}", has == expected, detail)

    for want in spec.get("functions", []):
        rows = _one(conn, "function_facts.sql", {"name": want["name"]})
        same = [r for r in rows if r["arguments"] == want["arguments"]]
        if not same:
            found = "; ".join(r["arguments"] for r in rows) or "no function of that name"
            check(f"function {want['name']} signature", False, found)
            continue
        got = same[0]
        check(f"function {want['name']} signature", True, want["arguments"])
        check(f"function {want['name']} result", got["result"] == want["result"], got["result"])
        check(f"function {want['name']} security", got["security_definer"] == want["security_definer"]
              and got["settings"] == want["settings"], f"security definer={got['security_definer']}, "
              f"settings={got['settings'] or 'none'}")  # fmt: skip
    return checks
