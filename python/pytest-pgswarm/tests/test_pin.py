"""pin_search_path against a real server, with psycopg 3, psycopg2 and SQLAlchemy.

The bug it exists for is reproduced first: a seeder that pins a schema that is not there writes into
``public`` without any error. With the helper the same seeder raises and ``public`` gains no row.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest

from pytest_pgswarm import PgswarmError, SchemaFallThrough, pin_search_path

from pgharness import PgServer, require


@pytest.fixture()
def db(pg_server: PgServer) -> Iterator[str]:
    name = pg_server.create_database("pin")
    pg_server.query("CREATE TABLE public.operation_type (name text)", dbname=name)
    pg_server.query('CREATE SCHEMA test_p1t1700000000r0000beef_gw0', dbname=name)
    pg_server.query('CREATE SCHEMA "We""ird Schema"', dbname=name)
    yield name


def public_rows(pg_server: PgServer, db: str) -> int:
    return pg_server.query("SELECT count(*) FROM public.operation_type", dbname=db)[0][0]


def _psycopg(server: PgServer, db: str) -> Any:
    psycopg = require("psycopg", "psycopg 3")
    return psycopg.connect(server.conninfo(db))


def _psycopg2(server: PgServer, db: str) -> Any:
    psycopg2 = require("psycopg2", "psycopg2 (psycopg2-binary)")
    return psycopg2.connect(server.conninfo(db))


def _sa_connection(server: PgServer, db: str) -> Any:
    sa = require("sqlalchemy", "SQLAlchemy")
    engine = sa.create_engine(server.sa_url(db, "psycopg"))
    return engine.connect()


def _sa_session(server: PgServer, db: str) -> Any:
    sa = require("sqlalchemy", "SQLAlchemy")
    orm = require("sqlalchemy.orm", "SQLAlchemy")
    engine = sa.create_engine(server.sa_url(db, "psycopg2"))
    return orm.Session(engine)


DRIVERS = {
    "psycopg3": _psycopg,
    "psycopg2": _psycopg2,
    "sqlalchemy_connection": _sa_connection,
    "sqlalchemy_session": _sa_session,
}


def _exec(conn: Any, sql: str) -> Any:
    """Runs one statement on any of the four; returns the first column of the first row."""
    if type(conn).__module__.startswith("sqlalchemy"):
        from sqlalchemy import text

        r = conn.execute(text(sql))
        return r.scalar() if r.returns_rows else None
    cur = conn.cursor()
    cur.execute(sql)
    return cur.fetchone()[0] if cur.description else None


@pytest.fixture(params=sorted(DRIVERS))
def connect(request: pytest.FixtureRequest, pg_server: PgServer, db: str) -> Iterator[Callable[[], Any]]:
    opened = []

    def make() -> Any:
        conn = DRIVERS[request.param](pg_server, db)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        conn.close()
        engine = getattr(conn, "engine", None) or (conn.get_bind() if hasattr(conn, "get_bind") else None)
        if engine is not None:
            engine.dispose()  # SQLAlchemy pools would keep the connection open


def test_the_bug_a_missing_schema_falls_through_to_public(pg_server: PgServer, db: str) -> None:
    """The control: without the helper, the legacy seeder's rows land in shared public."""
    with _psycopg(pg_server, db) as conn:
        conn.execute("SET LOCAL search_path TO test_gw0, public")  # the old name; no such schema
        conn.execute("INSERT INTO operation_type VALUES ('seeded')")  # no error at all
    assert public_rows(pg_server, db) == 1


def test_pin_to_an_existing_schema(connect: Callable[[], Any], pg_server: PgServer, db: str) -> None:
    conn = connect()
    assert pin_search_path(conn, "test_p1t1700000000r0000beef_gw0") == "test_p1t1700000000r0000beef_gw0"
    _exec(conn, "CREATE TABLE operation_type (name text)")  # unqualified: lands in the schema
    _exec(conn, "INSERT INTO operation_type VALUES ('seeded')")
    assert _exec(conn, "SELECT current_setting('search_path')") == "test_p1t1700000000r0000beef_gw0"
    conn.commit()
    assert public_rows(pg_server, db) == 0
    assert pg_server.query(
        "SELECT count(*) FROM test_p1t1700000000r0000beef_gw0.operation_type", dbname=db
    ) == [(1,)]


def test_a_seeder_pinning_a_missing_schema_raises_and_public_gains_no_row(
    connect: Callable[[], Any], pg_server: PgServer, db: str
) -> None:
    conn = connect()
    with pytest.raises(SchemaFallThrough) as e:
        pin_search_path(conn, "test_gw0", include_public=True)
    assert e.value.schema == "test_gw0" and e.value.resolved == "public"
    assert "does not exist" in str(e.value)
    # A seeder that swallows the error still cannot write anywhere: the path is now empty.
    with pytest.raises(Exception, match='relation "operation_type" does not exist'):
        _exec(conn, "INSERT INTO operation_type VALUES ('seeded')")
    conn.rollback()
    conn2 = connect()
    with pytest.raises(SchemaFallThrough):
        pin_search_path(conn2, "test_gw0")  # without public: nothing resolves
    conn2.commit()
    assert public_rows(pg_server, db) == 0


def test_identifiers_are_quoted(connect: Callable[[], Any], pg_server: PgServer, db: str) -> None:
    conn = connect()
    pin_search_path(conn, 'We"ird Schema')
    _exec(conn, "CREATE TABLE t (x int)")
    conn.commit()
    assert pg_server.query(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'We\"ird Schema'", dbname=db
    ) == [(1,)]
    conn2 = connect()
    with pytest.raises(SchemaFallThrough):
        pin_search_path(conn2, "test_x; DROP TABLE public.operation_type")  # a name, not SQL
    conn2.rollback()
    assert public_rows(pg_server, db) == 0


def test_autocommit_connections_are_refused(pg_server: PgServer, db: str) -> None:
    """SET LOCAL outside a transaction does nothing: refuse instead of pretending."""
    psycopg = require("psycopg", "psycopg 3")
    with psycopg.connect(pg_server.conninfo(db), autocommit=True) as conn:
        with pytest.raises(PgswarmError, match="autocommit"):
            pin_search_path(conn, "test_p1t1700000000r0000beef_gw0")
    psycopg2 = require("psycopg2", "psycopg2")
    conn2 = psycopg2.connect(pg_server.conninfo(db))
    conn2.autocommit = True
    with pytest.raises(PgswarmError, match="autocommit"):
        pin_search_path(conn2.cursor(), "test_p1t1700000000r0000beef_gw0")
    conn2.close()
    sa = require("sqlalchemy", "SQLAlchemy")
    engine = sa.create_engine(pg_server.sa_url(db), isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        with pytest.raises(PgswarmError, match="autocommit"):
            pin_search_path(c, "test_p1t1700000000r0000beef_gw0")
    engine.dispose()


def test_default_schema_comes_from_the_plugin(
    pg_server: PgServer, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGSWARM_SCHEMA", "test_p1t1700000000r0000beef_gw0")
    with _psycopg(pg_server, db) as conn:
        assert pin_search_path(conn) == "test_p1t1700000000r0000beef_gw0"
    monkeypatch.delenv("PGSWARM_SCHEMA")
    with _psycopg(pg_server, db) as conn:
        with pytest.raises(PgswarmError, match="PGSWARM_SCHEMA is not set"):
            pin_search_path(conn)
