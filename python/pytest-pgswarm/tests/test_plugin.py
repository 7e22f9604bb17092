"""The plugin inside real pytest runs (pytester): namespace propagation, environment, options.

No database here: these runs configure none, so the schema lifecycle is idle.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Dict, List

import pytest

from pytest_pgswarm import naming

# An inner test that reports what one worker sees, and what a subprocess of it inherits.
REPORTER = """
import json, os, subprocess, sys
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_report(i, pgswarm_namespace, pgswarm_worker, pgswarm_schema, pgswarm_application_name,
                pgswarm_connect_args, pgswarm_settings):
    child = subprocess.run(
        [sys.executable, "-c", "import json, os; print(json.dumps({{k: os.environ.get(k) for k in "
         "('PGSWARM_NAMESPACE', 'PGSWARM_SCHEMA', 'PGAPPNAME')}}))"],
        capture_output=True, text=True, check=True)
    with open(os.environ["REPORT_FILE"], "a") as f:
        f.write(json.dumps(dict(
            namespace=pgswarm_namespace, worker=pgswarm_worker, schema=pgswarm_schema,
            label=pgswarm_application_name(), connect_args=pgswarm_connect_args("x"),
            source=pgswarm_settings.namespace_source, databases=len(pgswarm_settings.databases),
            child=json.loads(child.stdout))) + "\\n")
"""


def _reports(path: Path) -> List[Dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture()
def report_file(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, run_env: None) -> Path:
    path = pytester.path / "reports.jsonl"
    monkeypatch.setenv("REPORT_FILE", str(path))
    return path


def test_without_xdist_the_worker_is_master(pytester: pytest.Pytester, report_file: Path) -> None:
    pytester.makepyfile(REPORTER.format(n=2))
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["pgswarm: namespace p*t*r* (generated), schema test_p*_<worker>*"])
    (r, r2) = _reports(report_file)
    assert r == r2
    ns = r["namespace"]
    assert naming.is_generated(ns) and ns.startswith("p")
    assert r["worker"] == "master"
    assert r["schema"] == f"test_{ns}_master"
    assert r["label"] == f"pytest_master_{ns}"
    assert r["connect_args"] == {
        "application_name": f"pytest_master_{ns}_x",
        "options": f"-c search_path=test_{ns}_master -c lock_timeout=5s",
    }
    assert r["child"] == {
        "PGSWARM_NAMESPACE": ns, "PGSWARM_SCHEMA": f"test_{ns}_master", "PGAPPNAME": r["label"],
    }


def test_xdist_workers_share_the_controllers_namespace(
    pytester: pytest.Pytester, report_file: Path, xdist: Any
) -> None:
    pytester.makepyfile(REPORTER.format(n=9))
    result = pytester.runpytest_subprocess("-n", "3")
    result.assert_outcomes(passed=9)
    reports = _reports(report_file)
    namespaces = {r["namespace"] for r in reports}
    assert len(namespaces) == 1, f"each worker must use the controller's namespace: {namespaces}"
    (ns,) = namespaces
    header = re.search(r"pgswarm: namespace (\S+)", result.stdout.str())
    assert header and header.group(1) == ns, "the controller made it"
    assert {r["worker"] for r in reports} == {"gw0", "gw1", "gw2"}
    for r in reports:
        w = r["worker"]
        assert r["source"] == "controller"
        assert r["schema"] == f"test_{ns}_{w}"
        assert r["label"] == f"pytest_{w}_{ns}"
        assert r["child"] == {
            "PGSWARM_NAMESPACE": ns, "PGSWARM_SCHEMA": f"test_{ns}_{w}", "PGAPPNAME": r["label"],
        }


def test_two_invocations_get_different_namespaces(
    pytester: pytest.Pytester, report_file: Path
) -> None:
    pytester.makepyfile(REPORTER.format(n=1))
    pytester.runpytest_subprocess("-p", "no:xdist").assert_outcomes(passed=1)
    pytester.runpytest_subprocess("-p", "no:xdist").assert_outcomes(passed=1)
    a, b = _reports(report_file)
    assert a["namespace"] != b["namespace"]


def test_an_explicit_namespace_is_used_by_controller_and_workers(
    pytester: pytest.Pytester, report_file: Path, monkeypatch: pytest.MonkeyPatch, xdist: Any
) -> None:
    monkeypatch.setenv("PGSWARM_NAMESPACE", "mydebug")
    pytester.makepyfile(REPORTER.format(n=4))
    result = pytester.runpytest_subprocess("-n", "2")
    result.assert_outcomes(passed=4)
    result.stdout.fnmatch_lines(["pgswarm: namespace mydebug (PGSWARM_NAMESPACE (explicit))*"])
    reports = _reports(report_file)
    assert {r["namespace"] for r in reports} == {"mydebug"}
    assert {r["schema"] for r in reports} <= {"test_mydebug_gw0", "test_mydebug_gw1"}


@pytest.mark.parametrize("bad", ["My_Debug", "my-debug", "x" * 33])
def test_an_invalid_explicit_namespace_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, run_env: None, bad: str
) -> None:
    monkeypatch.setenv("PGSWARM_NAMESPACE", bad)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest_subprocess("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*PGSWARM_NAMESPACE: invalid pgswarm namespace '{bad}'*a-z and 0-9*"])


def test_a_namespace_exported_by_a_parent_run_is_not_reused(
    pytester: pytest.Pytester, report_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # what a pytest started from inside a test (or a stale copied export) sees
    monkeypatch.setenv("PGSWARM_NAMESPACE", "p1t1700000000r00000001")
    monkeypatch.setenv("PGSWARM_NAMESPACE_EXPORTED", "p1t1700000000r00000001")
    monkeypatch.setenv("PGSWARM_SCHEMA", "test_p1t1700000000r00000001_master")
    pytester.makepyfile(REPORTER.format(n=1))
    pytester.runpytest_subprocess("-p", "no:xdist").assert_outcomes(passed=1)
    (r,) = _reports(report_file)
    assert r["namespace"] != "p1t1700000000r00000001" and r["source"] == "generated"
    assert r["child"]["PGSWARM_SCHEMA"] == f"test_{r['namespace']}_master"


def test_the_environment_is_restored_after_the_run(pytester: pytest.Pytester, run_env: None) -> None:
    os.environ["PGAPPNAME"] = "someone_elses"
    try:
        pytester.makepyfile(
            """
            import os
            def test_x(pgswarm_application_name):
                assert os.environ["PGAPPNAME"] == pgswarm_application_name()
            """
        )
        pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)  # in this process
        assert os.environ["PGAPPNAME"] == "someone_elses"
        assert "PGSWARM_NAMESPACE" not in os.environ and "PGSWARM_SCHEMA" not in os.environ
    finally:
        del os.environ["PGAPPNAME"]


def test_pgappname_opt_out(pytester: pytest.Pytester, run_env: None) -> None:
    pytester.makeini("[pytest]\npgswarm_pgappname = false\n")
    pytester.makepyfile(
        """
        import os
        def test_x():
            assert "PGAPPNAME" not in os.environ
            assert os.environ["PGSWARM_NAMESPACE"]
        """
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)


def test_ini_options(pytester: pytest.Pytester, run_env: None) -> None:
    pytester.makeini(
        """
        [pytest]
        pgswarm_search_path_public = true
        pgswarm_lock_timeout = 250ms
        pgswarm_app_prefix = itest
        pgswarm_schema_prefix = it
        """
    )
    pytester.makepyfile(
        """
        def test_x(pgswarm_connect_args, pgswarm_schema, pgswarm_namespace, pgswarm_asyncpg_connect_args):
            assert pgswarm_schema == f"it_{pgswarm_namespace}_master"
            assert pgswarm_connect_args() == {
                "application_name": f"itest_master_{pgswarm_namespace}",
                "options": f"-c search_path={pgswarm_schema},public -c lock_timeout=250ms",
            }
            assert pgswarm_asyncpg_connect_args()["server_settings"]["lock_timeout"] == "250ms"
        """
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)


@pytest.mark.parametrize(
    "ini,message",
    [
        ("pgswarm_lock_timeout = 5 seconds", "*pgswarm_lock_timeout '5seconds'*"),
        ("pgswarm_lock_timeout = -1s", "*pgswarm_lock_timeout '-1s'*"),
        ("pgswarm_app_prefix = Py", "*invalid pgswarm_app_prefix 'Py'*"),
        ("pgswarm_schema_prefix = t_", "*invalid pgswarm_schema_prefix 't_'*"),
        ("pgswarm_app_prefix = " + "a" * 40, "*does not fit*"),
    ],
)
def test_bad_options_are_usage_errors(
    pytester: pytest.Pytester, run_env: None, ini: str, message: str
) -> None:
    pytester.makeini(f"[pytest]\n{ini}\n")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:xdist")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_a_suffix_that_would_be_cut_fails_the_test_that_asks(
    pytester: pytest.Pytester, run_env: None
) -> None:
    pytester.makepyfile(
        """
        import pytest
        from pytest_pgswarm import NamingError
        def test_x(pgswarm_connect_args, pgswarm_application_name, pgswarm_settings):
            room = pgswarm_settings.max_suffix_bytes()
            with pytest.raises(NamingError, match=f"PostgreSQL keeps 63.*at most {room} bytes"):
                pgswarm_connect_args("s" * (room + 1))
            assert len(pgswarm_application_name("s" * room)) == 62
        """
    )
    pytester.runpytest("-p", "no:xdist").assert_outcomes(passed=1)


def test_database_sources_and_precedence(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, run_env: None
) -> None:
    pytester.makeini("[pytest]\npgswarm_databases =\n    ini_a\n    host=/nowhere dbname=ini_b\n")
    pytester.makepyfile(
        """
        import os
        def test_x(pgswarm_settings):
            with open("dbs.txt", "w") as f:
                f.write("|".join(d.conninfo for d in pgswarm_settings.databases))
        """
    )
    # nothing connects: the lifecycle fixture is replaced for this check
    pytester.makeconftest(
        """
        import pytest
        @pytest.fixture(scope="session", autouse=True)
        def _pgswarm_worker_schemas():
            yield []
        """
    )

    def dbs(*args: str) -> str:
        pytester.runpytest("-p", "no:xdist", *args).assert_outcomes(passed=1)
        return (pytester.path / "dbs.txt").read_text()

    assert dbs() == "dbname=ini_a|host=/nowhere dbname=ini_b"
    monkeypatch.setenv("PGSWARM_TEST_DATABASES", 'postgres://h/env_a "host=/x dbname=env_b"')
    assert dbs() == "postgres://h/env_a|host=/x dbname=env_b"
    assert dbs("--pgswarm-db", "cli_a", "--pgswarm-db", "platform=host=/y dbname=cli_b") == (
        "dbname=cli_a|host=/y dbname=cli_b"
    )
    result = pytester.runpytest("-p", "no:xdist", "--pgswarm-db", "platform=postgres://h/p")
    result.stdout.fnmatch_lines(["pgswarm: namespace *databases: platform"])
