"""Worker schemas on a real server, and the three drivers connecting with the plugin's connect args."""

from __future__ import annotations

import re
from typing import Any, List

import pytest

from pgharness import PgServer, require

FOREIGN = ["test_p1t1700000000r0000beef_gw0", "test_gw0", "test_mydebug_gw1"]


def _namespace(result: pytest.RunResult) -> str:
    m = re.search(r"pgswarm: namespace (\S+)", result.stdout.str())
    assert m, result.stdout.str()
    return m.group(1)


def _url(server: PgServer, db: str) -> str:
    return f"postgresql://{server.role}@/{db}?host={server.root}&port=5432"


LIFECYCLE_TESTS = """
import psycopg, pytest

@pytest.mark.parametrize("i", range(4))
def test_schema_exists_and_run_is_live(i, pgswarm_databases, pgswarm_schema, pgswarm_application_name):
    for dsn in pgswarm_databases:
        with psycopg.connect(dsn) as c:
            assert c.execute("SELECT count(*) FROM pg_namespace WHERE nspname = %s",
                             [pgswarm_schema]).fetchone() == (1,)
            held = c.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                             " AND application_name = %s", [pgswarm_application_name("pgswarm")]).fetchone()
            assert held == (1,), "one idle labeled connection per database keeps the run live"
"""


def test_schemas_are_created_per_worker_and_dropped_at_the_end(
    pytester: pytest.Pytester, pg_server: PgServer, two_databases: List[str], run_env: None,
    xdist: Any,
) -> None:
    for db in two_databases:
        for schema in FOREIGN:
            pg_server.query(f'CREATE SCHEMA "{schema}"', dbname=db)
    pytester.makepyfile(LIFECYCLE_TESTS)
    args = [a for db in two_databases for a in ("--pgswarm-db", pg_server.conninfo(db))]
    result = pytester.runpytest_subprocess("-n", "2", *args)
    result.assert_outcomes(passed=4)
    ns = _namespace(result)
    for db in two_databases:
        assert pg_server.schemas(db) == sorted(FOREIGN), "own schemas dropped, others untouched"
        assert not pg_server.schemas(db, f"%{ns}%")


def test_keep_schemas(
    pytester: pytest.Pytester, pg_server: PgServer, two_databases: List[str], run_env: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "PGSWARM_TEST_DATABASES", " ".join(f'"{pg_server.conninfo(db)}"' for db in two_databases)
    )
    pytester.makepyfile(LIFECYCLE_TESTS)
    result = pytester.runpytest_subprocess("-p", "no:xdist", "--pgswarm-keep-schemas")
    result.assert_outcomes(passed=4)
    ns = _namespace(result)
    for db in two_databases:
        assert pg_server.schemas(db) == [f"test_{ns}_master"]
        pg_server.query(f'DROP SCHEMA "test_{ns}_master"', dbname=db)


def test_an_unreachable_database_errors_every_test_and_leaves_nothing(
    pytester: pytest.Pytester, pg_server: PgServer, two_databases: List[str], run_env: None
) -> None:
    pytester.makepyfile(LIFECYCLE_TESTS)
    bad = f"host={pg_server.root} port=5432 user=postgres dbname=no_such_db"
    result = pytester.runpytest_subprocess(
        "-p", "no:xdist", "--pgswarm-db", pg_server.conninfo(two_databases[0]), "--pgswarm-db", bad
    )
    result.assert_outcomes(errors=4)
    result.stdout.fnmatch_lines(["*pgswarm: cannot connect to test database*no_such_db*"])
    assert pg_server.schemas(two_databases[0]) == [], "the schema made before the failure is gone"


DRIVER_TESTS = """
import psycopg, psycopg2, sqlalchemy as sa
import pytest
from pytest_pgswarm import pin_search_path

WHO = ("SELECT application_name, current_schema(), current_setting('search_path'), "
       "current_setting('lock_timeout') FROM pg_stat_activity WHERE pid = pg_backend_pid()")

@pytest.fixture(params=[0, 1])
def url(request, pgswarm_databases):
    return pgswarm_databases[request.param]

def expected(label, schema):
    return (label, schema, schema, "5s")

def test_psycopg3(url, pgswarm_connect_args, pgswarm_application_name, pgswarm_schema):
    with psycopg.connect(url, **pgswarm_connect_args("psycopg3")) as c:
        assert c.execute(WHO).fetchone() == expected(pgswarm_application_name("psycopg3"), pgswarm_schema)
        pin_search_path(c, pgswarm_schema)
        c.execute("CREATE TABLE from_psycopg3 (x int)")

def test_psycopg2(url, pgswarm_connect_args, pgswarm_application_name, pgswarm_schema):
    c = psycopg2.connect(url, **pgswarm_connect_args("psycopg2"))
    cur = c.cursor()
    cur.execute(WHO)
    assert cur.fetchone() == expected(pgswarm_application_name("psycopg2"), pgswarm_schema)
    pin_search_path(c, pgswarm_schema)
    cur.execute("CREATE TABLE from_psycopg2 (x int)")
    c.commit()
    c.close()

@pytest.mark.parametrize("driver", ["psycopg", "psycopg2"])
def test_sqlalchemy(url, driver, pgswarm_connect_args, pgswarm_application_name, pgswarm_schema):
    engine = sa.create_engine(url.replace("postgresql://", f"postgresql+{driver}://"),
                              connect_args=pgswarm_connect_args("sa"))
    try:
        with engine.begin() as c:
            assert tuple(c.execute(sa.text(WHO)).one()) == expected(pgswarm_application_name("sa"), pgswarm_schema)
            pin_search_path(c, pgswarm_schema)
            c.execute(sa.text(f"CREATE TABLE from_sa_{driver} (x int)"))
    finally:
        engine.dispose()

def test_unqualified_writes_never_reach_public(url, pgswarm_connect_args):
    # without public on the path, nothing resolves outside the worker schema
    with psycopg.connect(url, **pgswarm_connect_args()) as c:
        with pytest.raises(psycopg.errors.UndefinedTable):
            c.execute("INSERT INTO public_only VALUES (1)")

def test_plain_libpq_connections_are_labeled_through_pgappname(url, pgswarm_application_name):
    with psycopg.connect(url) as c:  # code that knows nothing of the plugin
        assert c.execute("SELECT current_setting('application_name')").fetchone() == (
            pgswarm_application_name(),)
    c2 = psycopg2.connect(url)
    cur = c2.cursor()
    cur.execute("SELECT current_setting('application_name')")
    assert cur.fetchone() == (pgswarm_application_name(),)
    c2.close()

def test_tables_landed_in_the_worker_schema(url, pgswarm_schema):
    # runs last in file order: what the tests above created is in the worker schema
    with psycopg.connect(url) as c:
        names = {r[0] for r in c.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s",
                                          [pgswarm_schema])}
    assert {"from_psycopg3", "from_psycopg2", "from_sa_psycopg", "from_sa_psycopg2"} <= names
"""


def test_psycopg3_psycopg2_and_sqlalchemy_connect_labeled_and_pinned(
    pytester: pytest.Pytester, pg_server: PgServer, two_databases: List[str], run_env: None
) -> None:
    for mod, what in [("psycopg2", "psycopg2-binary"), ("sqlalchemy", "SQLAlchemy")]:
        require(mod, what)
    for db in two_databases:
        pg_server.query("CREATE TABLE public.public_only (x int)", dbname=db)
    pytester.makepyfile(DRIVER_TESTS)
    args = [a for db in two_databases for a in ("--pgswarm-db", _url(pg_server, db))]
    result = pytester.runpytest_subprocess("-p", "no:xdist", *args)
    result.assert_outcomes(passed=14)
    for db in two_databases:
        assert pg_server.schemas(db) == []
        assert pg_server.query("SELECT count(*) FROM public.public_only", dbname=db) == [(0,)]
