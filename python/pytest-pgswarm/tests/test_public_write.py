"""End to end (issue 25): a real ``-n 3`` invocation whose seeder falls through to ``public``.

Each worker's engine has its namespaced schema (the plugin creates it), but a session-scoped seeder
still composes the legacy ``test_{worker}``, which does not exist: ``SET LOCAL search_path TO
test_gw0, public`` does not fail, and its INSERT lands in the shared ``public.operation_type``. While
the seeders' transactions are open, ``pgswarm snapshot --fail-on-public-write`` must exit 1 and name
the run, each worker and the table; a second run that only reads ``public`` must not appear.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import List

from pgharness import PgServer, clean_env, wait_for
from test_swarm import Run, _db_args, _pgswarm, _ready

INNER_CONFTEST = """
import os, pathlib, time
import psycopg, pytest

SIGNALS = pathlib.Path(os.environ["SWARM_SIGNALS"])
ROLE = os.environ["SWARM_ROLE"]

@pytest.fixture(scope="session")
def seeded(pgswarm_databases, pgswarm_connect_args, pgswarm_namespace, pgswarm_worker):
    conn = psycopg.connect(pgswarm_databases[0], **pgswarm_connect_args("seed"))
    if ROLE == "seeder":
        # The write-up's stale seeder: the legacy name does not exist, rows fall through.
        conn.execute(f"SET LOCAL search_path TO test_{pgswarm_worker}, public")
        conn.execute("INSERT INTO operation_type (name) VALUES ('seeded')")
    else:
        conn.execute("SELECT count(*) FROM public.operation_type")
    (SIGNALS / f"ready_{pgswarm_namespace}_{pgswarm_worker}").touch()
    deadline = time.monotonic() + 120
    while not (SIGNALS / "release").exists():
        assert time.monotonic() < deadline, "never released"
        time.sleep(0.05)
    conn.rollback()
    conn.close()
    yield
"""

INNER_TESTS = """
import pytest

@pytest.mark.parametrize("i", range(3))
def test_with_seed_data(i, seeded):
    pass
"""


def _checkout(root: Path, name: str) -> Path:
    work = root / name
    work.mkdir(parents=True)
    (work / "pytest.ini").write_text("[pytest]\n")
    (work / "conftest.py").write_text(INNER_CONFTEST)
    (work / "test_work.py").write_text(INNER_TESTS)
    return work


def test_a_seeder_falling_through_to_public_is_caught_with_its_run_and_workers(
    pg_server: PgServer, two_databases: List[str], pgswarm_bin: Path, tmp_path: Path, xdist: object,
) -> None:
    db = two_databases[0]
    pg_server.query("CREATE TABLE operation_type (id serial PRIMARY KEY, name text)", dbname=db)
    signals = tmp_path / "signals"
    signals.mkdir()
    state = str(tmp_path / "state")
    seeder_env = clean_env(SWARM_SIGNALS=str(signals), SWARM_ROLE="seeder", XDG_STATE_HOME=state)
    reader_env = clean_env(SWARM_SIGNALS=str(signals), SWARM_ROLE="reader", XDG_STATE_HOME=state)
    runs = [Run(_checkout(tmp_path, "seeder"), two_databases, pg_server, seeder_env)]
    try:
        time.sleep(1.0)
        runs.append(Run(_checkout(tmp_path, "reader"), two_databases, pg_server, reader_env))
        ready = wait_for(lambda: _ready(signals, 6, runs), 90, "six workers connected and waiting")
        assert len(ready) == 2, ready
        rc, snap, detail = _pgswarm(
            pgswarm_bin, "snapshot", "--json", "--fail-on-public-write",
            *_db_args(pg_server, two_databases), env=seeder_env,
        )
        assert rc == 1 and snap is not None, detail
        writes = snap["public_writes"]
        assert {w["namespace"] for w in writes} and len({w["namespace"] for w in writes}) == 1, writes
        seeder_ns = writes[0]["namespace"]
        assert seeder_ns in ready, (seeder_ns, ready)
        assert sorted(w["worker"] for w in writes) == ["gw0", "gw1", "gw2"], writes
        for w in writes:
            assert w["evidence"] == "lock" and w["relation"] == "public.operation_type", w
            assert w["mode"] == "RowExclusiveLock" and w["suffix"] == "seed", w
            assert w["database"] == db, w
        assert "public_write" in snap["warning_codes"], snap["warning_codes"]
        # Both runs have their worker schemas: the precondition is not what failed here.
        assert snap["missing_worker_schemas"] == [], snap["missing_worker_schemas"]

        (signals / "release").touch()
        codes = [r.wait(120) for r in runs]
        outputs = [r.output() for r in runs]
    finally:
        (signals / "release").touch()
        for r in runs:
            r.kill()
    for code, out in zip(codes, outputs):
        assert code == 0, out[-4000:]
    # The seeders rolled back and left: nothing is written now.
    rc, snap, detail = _pgswarm(
        pgswarm_bin, "snapshot", "--json", "--fail-on-public-write",
        *_db_args(pg_server, two_databases), env=seeder_env,
    )
    assert rc == 0 and snap["public_writes"] == [], detail
