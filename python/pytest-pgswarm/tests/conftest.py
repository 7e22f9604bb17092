"""Fixtures of the plugin's own test suite: the throwaway server, the pgswarm binary, xdist.

Every prerequisite that is missing fails the tests that need it with what to install (no skips).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, List

import pytest

from pgharness import REPO_DIR, PgServer, find_pg_bindir, require

pytest_plugins = ["pytester"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    require("psycopg", "psycopg 3 (the harness talks to the server with it)")
    bindir = find_pg_bindir()
    if bindir is None:
        pytest.fail(
            "PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql "
            "(or set PGSWARM_PG_BINDIR to their directory)",
            pytrace=False,
        )
    root = Path(tempfile.mkdtemp(prefix="pgswarm-pg-pytest-"))
    root.chmod(0o755)
    server = PgServer(bindir, root)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture()
def two_databases(pg_server: PgServer) -> List[str]:
    """Two fresh databases (a platform and a tenant database) for one test."""
    return [pg_server.create_database("platform"), pg_server.create_database("tenant")]


@pytest.fixture(scope="session")
def pgswarm_bin() -> Path:
    """The pgswarm binary: PGSWARM_BIN, else the debug build of this repository."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO_DIR / "target")
    path = Path(os.environ.get("PGSWARM_BIN") or target / "debug" / "pgswarm")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"the pgswarm binary is not at {path}: run `cargo build` in {REPO_DIR} "
            "(or set PGSWARM_BIN to a pgswarm binary). The end-to-end tests check the plugin's "
            "names with pgswarm itself.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def xdist() -> Any:
    return require("xdist", "pytest-xdist")


@pytest.fixture()
def run_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """For pytester runs: drop this run's exported names, so the child starts as from a shell."""
    for key in list(os.environ):
        if key.startswith("PGSWARM_") or key == "PGAPPNAME":
            monkeypatch.delenv(key)


