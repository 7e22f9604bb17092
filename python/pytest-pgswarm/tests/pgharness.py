"""Test harness: a throwaway PostgreSQL server and loud prerequisite checks (used by conftest.py).

The server runs from the installed binaries (initdb, pg_ctl) in its own temporary directory, on a Unix
socket there and no TCP port, so parallel CI jobs and other servers on the machine never meet it. As
root it runs as the ``postgres`` OS user (initdb refuses root). It is stopped in the session
finalizer, when starting fails, and by a watchdog process if this pytest process is killed.

A missing prerequisite fails the tests that need it with what to install; nothing is skipped.
"""

from __future__ import annotations

import glob
import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import time
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = PACKAGE_DIR.parents[1]
INSTALL_HINT = f"pip install -r {PACKAGE_DIR / 'requirements-test.txt'}"


def require(module: str, what: str) -> Any:
    """Imports ``module`` or fails the test (never skips) saying what to install."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        pytest.fail(f"{what} is not installed ({e}): {INSTALL_HINT}", pytrace=False)


def find_pg_bindir() -> Optional[Path]:
    candidates: List[str] = []
    if os.environ.get("PGSWARM_PG_BINDIR"):
        candidates.append(os.environ["PGSWARM_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        candidates.append(out.stdout.strip())
    candidates += sorted(
        glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True
    )
    for c in candidates:
        if c and (Path(c) / "initdb").is_file() and (Path(c) / "pg_ctl").is_file():
            return Path(c)
    return None


_WATCHDOG = textwrap.dedent(
    """
    import os, shutil, subprocess, sys, time
    parent, pg_ctl, data, root, user = sys.argv[1:6]
    while True:
        try:
            os.kill(int(parent), 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    cmd = [pg_ctl, "-D", data, "-m", "immediate", "stop"]
    if user:
        cmd = ["runuser", "-u", user, "--"] + cmd
    subprocess.run(cmd, capture_output=True)
    shutil.rmtree(root, ignore_errors=True)
    """
)


class PgServer:
    """One throwaway server; connection strings go through its socket directory."""

    def __init__(self, bindir: Path, root: Path) -> None:
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.user = "postgres" if os.geteuid() == 0 else ""
        self.role = "postgres"
        self.watchdog: Optional[subprocess.Popen] = None

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self.user:
            cmd = ["runuser", "-u", self.user, "--"] + cmd
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        if self.user:
            shutil.chown(self.root, user=self.user)
        r = self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", self.role,
            "--no-sync",
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout}\n{r.stderr}")
        # Started before the server: if this process dies from here on, the server goes with it.
        self.watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(os.getpid()), str(self.bindir / "pg_ctl"),
             str(self.data), str(self.root), self.user],
            start_new_session=True, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        opts = (
            f"-k {self.root} -c listen_addresses='' -c max_connections=200 -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off"
        )
        r = self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
            "-l", str(self.root / "log"), "-o", opts, "start",
        )
        if r.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed:\n{r.stdout}\n{r.stderr}\n{log}")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        if self.watchdog is not None:
            self.watchdog.kill()  # our own child, by its handle
            self.watchdog.wait()
        shutil.rmtree(self.root, ignore_errors=True)

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.root} port=5432 user={self.role} dbname={dbname}"

    def sa_url(self, dbname: str, driver: str = "psycopg") -> str:
        """A SQLAlchemy URL through the socket directory."""
        return f"postgresql+{driver}://{self.role}@/{dbname}?host={self.root}&port=5432"

    def connect(self, dbname: str = "postgres", **kwargs: Any) -> Any:
        psycopg = require("psycopg", "psycopg 3")
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("application_name", os.environ.get("PGAPPNAME") or "pgswarm_test_harness")
        return psycopg.connect(self.conninfo(dbname), **kwargs)

    def query(self, sql: str, params: Any = None, dbname: str = "postgres") -> List[tuple]:
        with self.connect(dbname) as conn:
            cur = conn.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, prefix: str = "db") -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def schemas(self, dbname: str, like: str = "test\\_%") -> List[str]:
        rows = self.query(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY 1", [like], dbname
        )
        return [r[0] for r in rows]


def clean_env(**extra: str) -> Dict[str, str]:
    """The environment for a child pytest: without this run's exported names (as a fresh shell)."""
    env = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("PGSWARM_", "PYTEST_")) and k not in ("PGAPPNAME",)
    }
    env.update(extra)
    return env


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
