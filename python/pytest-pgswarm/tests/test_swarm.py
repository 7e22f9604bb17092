"""End to end: real invocations with xdist against shared databases, observed with the pgswarm binary.

Two invocations with ``-n 3`` start one second apart against the same two databases, as two agents in
one checkout would. Each worker creates its tables (like ``metadata.create_all()``), then waits until
the test has taken a ``pgswarm snapshot --json`` (so the picture is taken while all six workers are
connected), then runs DDL-heavy tests. A second test kills a run with SIGKILL and has
``pgswarm sweep`` drop what it left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from pgharness import PgServer, clean_env, wait_for

TABLES = 30
INNER_CONFTEST = f"""
import os, pathlib, time
import psycopg, pytest
from pytest_pgswarm import pin_search_path

SIGNALS = pathlib.Path(os.environ["SWARM_SIGNALS"])
TABLES = {TABLES}

@pytest.fixture(scope="session")
def conns(pgswarm_databases, pgswarm_connect_args, pgswarm_settings, pgswarm_schema,
          pgswarm_namespace, pgswarm_worker):
    conns = [psycopg.connect(dsn, **pgswarm_connect_args("work")) for dsn in pgswarm_databases]
    for c in conns:  # like metadata.create_all(), in this worker's schema of each database
        with c.transaction():
            pin_search_path(c, pgswarm_schema)
            for t in range(TABLES):
                c.execute(f"CREATE TABLE t{{t}} (id int PRIMARY KEY, v text)")
    # the longest suffix the plugin allows: pgswarm must see it labeled, not possibly cut
    room = pgswarm_settings.max_suffix_bytes()
    longest = [psycopg.connect(dsn, **pgswarm_connect_args("s" * room)) for dsn in pgswarm_databases]
    (SIGNALS / f"ready_{{pgswarm_namespace}}_{{pgswarm_worker}}").touch()
    deadline = time.monotonic() + 120
    while not (SIGNALS / "release").exists():
        assert time.monotonic() < deadline, "never released"
        time.sleep(0.05)
    for c in longest:
        c.close()
    yield conns
    for c in conns:
        c.close()
"""

INNER_TESTS = """
import pytest
from pytest_pgswarm import pin_search_path
from conftest import TABLES

@pytest.mark.parametrize("i", range(12))
def test_ddl_and_writes(i, conns, pgswarm_schema):
    for c in conns:
        pin_search_path(c, pgswarm_schema)
        t = f"t{i % TABLES}"
        c.execute(f"TRUNCATE {t}")
        c.execute(f"ALTER TABLE {t} ADD COLUMN IF NOT EXISTS extra int")
        c.execute(f"INSERT INTO {t} (id, v) SELECT g, 'x' FROM generate_series(1, 200) g")
        c.execute(f"DROP TABLE IF EXISTS scratch")
        c.execute(f"CREATE TABLE scratch AS SELECT * FROM {t}")
        c.execute(f"LOCK TABLE {t} IN ACCESS EXCLUSIVE MODE")
        c.commit()
"""


def _db_args(server: PgServer, dbs: List[str]) -> List[str]:
    return [a for db in dbs for a in ("--db", f"{db}={server.conninfo(db)}")]


def _pgswarm(bin_: Path, *args: str, env: Dict[str, str]) -> Tuple[int, Any, str]:
    p = subprocess.run([str(bin_), *args], capture_output=True, text=True, timeout=120, env=env)
    try:
        doc = json.loads(p.stdout)
    except ValueError:
        doc = None
    return p.returncode, doc, f"exit {p.returncode}\nstdout: {p.stdout[-3000:]}\nstderr: {p.stderr[-3000:]}"


class Run:
    """One inner pytest invocation in its own process group (so a kill takes its workers too)."""

    def __init__(self, workdir: Path, dbs: List[str], server: PgServer, env: Dict[str, str]) -> None:
        self.log = workdir / f"run_{time.monotonic_ns()}.log"
        args = [sys.executable, "-m", "pytest", "-n", "3", "-p", "no:cacheprovider", "-q"]
        args += [a for db in dbs for a in ("--pgswarm-db", server.conninfo(db))]
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(
                args, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text()

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # our child's own process group
        self.proc.wait()

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"run did not finish in {timeout}s:\n{self.output()[-4000:]}")


@pytest.fixture()
def swarm_dir(tmp_path: Path, xdist: Any) -> Path:
    work = tmp_path / "checkout"
    (work / "signals").mkdir(parents=True)
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "conftest.py").write_text(INNER_CONFTEST)
    (work / "test_work.py").write_text(INNER_TESTS)
    return work


def _ready(signals: Path, count: int, runs: List["Run"]) -> Dict[str, List[str]]:
    """namespace -> workers that are connected and waiting for release (fails if a run ended)."""
    for r in runs:
        if r.proc.poll() is not None:
            raise AssertionError(f"a run ended before its workers were ready:\n{r.output()[-4000:]}")
    found: Dict[str, List[str]] = {}
    for f in signals.glob("ready_*"):
        _, ns, worker = f.name.split("_")
        found.setdefault(ns, []).append(worker)
    return found if sum(map(len, found.values())) >= count else {}


def _schemas_of(server: PgServer, dbs: List[str], ns: str) -> List[str]:
    return [f"{db}:{s}" for db in dbs for s in server.schemas(db, f"test\\_{ns}\\_%")]


def test_two_invocations_with_three_workers_each_never_collide(
    pg_server: PgServer, two_databases: List[str], swarm_dir: Path, pgswarm_bin: Path,
    tmp_path: Path,
) -> None:
    signals = swarm_dir / "signals"
    env = clean_env(SWARM_SIGNALS=str(signals), XDG_STATE_HOME=str(tmp_path / "state"))
    runs = [Run(swarm_dir, two_databases, pg_server, env)]
    try:
        time.sleep(1.0)
        runs.append(Run(swarm_dir, two_databases, pg_server, env))
        ready = wait_for(lambda: _ready(signals, 6, runs), 90, "six workers connected and waiting")
        namespaces = sorted(ready)
        assert len(namespaces) == 2, f"two invocations, one namespace each: {ready}"
        assert all(sorted(w) == ["gw0", "gw1", "gw2"] for w in ready.values()), ready
        for ns in namespaces:
            assert re.fullmatch(r"p\d+t\d+r[0-9a-f]{8}", ns), ns
            assert len(_schemas_of(pg_server, two_databases, ns)) == 6, "3 workers x 2 databases"

        rc, snap, detail = _pgswarm(
            pgswarm_bin, "snapshot", "--json", *_db_args(pg_server, two_databases), env=env
        )
        assert rc == 0 and snap is not None, detail
        invocations = {i["namespace"]: i for i in snap["invocations"]}
        for ns in namespaces:
            inv = invocations.get(ns)
            assert inv is not None, f"pgswarm does not see invocation {ns}: {detail}"
            assert inv["workers"] == ["gw0", "gw1", "gw2"], inv
            assert inv["live"] and not inv["forced"] and inv["schemas"] == 6, inv
            assert sorted(inv["databases"]) == sorted(two_databases), inv
            assert inv["pid"] == int(ns[1:].split("t")[0]), "pgswarm decodes the run's pid"
        clients = [s for s in snap["sessions"] if s["backend_type"] == "client backend"]
        ours = [s for s in clients if s["namespace"] in namespaces]
        # per worker and database: the plugin's held connection, "work" and the longest suffix
        assert len(ours) == 2 * 3 * 2 * 3, [s["application_name"] for s in clients]
        for s in clients:
            assert s["label"] == "labeled", f"every session parsed: {s['application_name']!r} {s}"
            assert not s["suffix_maybe_truncated"], s["application_name"]
        longest = [s for s in ours if s["suffix"] and set(s["suffix"]) == {"s"}]
        assert len(longest) == 12 and all(len(s["application_name"]) == 62 for s in longest)
        assert not snap["blocking"], snap["blocking"]
        assert not [w for w in snap["warnings"] if "unattributed" in w], snap["warnings"]

        (signals / "release").touch()
        codes = [r.wait(120) for r in runs]
        outputs = [r.output() for r in runs]
    finally:
        (signals / "release").touch()
        for r in runs:
            r.kill()
    for code, out in zip(codes, outputs):
        assert code == 0 and re.search(r"\b12 passed\b", out), out[-4000:]
        assert "LockNotAvailable" not in out and "lock timeout" not in out, out[-4000:]
    for ns in namespaces:
        assert _schemas_of(pg_server, two_databases, ns) == [], "every schema dropped at the end"


def test_a_killed_run_leaves_schemas_that_pgswarm_sweep_drops(
    pg_server: PgServer, two_databases: List[str], swarm_dir: Path, pgswarm_bin: Path,
    tmp_path: Path,
) -> None:
    signals = swarm_dir / "signals"
    env = clean_env(SWARM_SIGNALS=str(signals), XDG_STATE_HOME=str(tmp_path / "state"))
    sweep = ["sweep", "--yes", "--json", "--min-age", "0s", *_db_args(pg_server, two_databases)]
    run = Run(swarm_dir, two_databases, pg_server, env)
    try:
        ready = wait_for(lambda: _ready(signals, 3, [run]), 90, "three workers connected")
        (ns,) = ready
        expected = sorted(f"test_{ns}_gw{i}" for i in range(3))

        # While the run lives, its held connections keep every schema: nothing is dropped.
        rc, report, detail = _pgswarm(pgswarm_bin, *sweep, env=env)
        assert rc == 0 and report is not None, detail
        for db in report["databases"]:
            assert db["dropped"] == [], detail
            assert sorted(k["schema"] for k in db["kept"] if k["reason"] == "live") == expected, detail

        run.kill()  # SIGKILL to the controller and its workers: no teardown runs
    finally:
        run.kill()
    assert len(_schemas_of(pg_server, two_databases, ns)) == 6, "the crash left its schemas"
    wait_for(
        lambda: not pg_server.query(
            "SELECT 1 FROM pg_stat_activity WHERE application_name LIKE %s", [f"%\\_{ns}%"]
        ),
        20, "the killed run's sessions to end",
    )
    rc, report, detail = _pgswarm(pgswarm_bin, *sweep, env=env)
    assert rc == 0 and report is not None, detail
    assert report["active_detection_complete"], detail
    for db in report["databases"]:
        assert sorted(db["dropped"]) == expected, detail
    assert _schemas_of(pg_server, two_databases, ns) == []
