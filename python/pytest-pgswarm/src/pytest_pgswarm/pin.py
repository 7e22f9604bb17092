"""Fail-closed ``search_path``: the one helper every fixture and seeder goes through.

``SET LOCAL search_path TO missing_schema, public`` does not fail in PostgreSQL: the missing schema is
skipped and every unqualified write lands in the shared ``public`` schema, where concurrent
invocations see each other's rows. No test notices. That happened when engines moved to namespaced
schemas and a seeder still composed the old ``test_gw0``. :func:`pin_search_path` sets the path *and*
asks the server which schema it actually resolved to (``current_schema()``); anything but the
requested schema raises :class:`SchemaFallThrough`, after emptying the transaction's search_path so
that even a caller who swallows the exception cannot write unqualified names anywhere.

It works with DB-API connections of psycopg 3 and psycopg2 (and their cursors) and with SQLAlchemy
``Connection`` / ``Session`` objects, without importing any of them.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from .naming import MAX_NAME_BYTES


class PgswarmError(RuntimeError):
    """Base class of the plugin's errors."""


class SchemaFallThrough(PgswarmError):
    """The pinned schema is not what the server resolves to: it is missing (or not usable)."""

    def __init__(self, schema: str, resolved: Optional[str]) -> None:
        self.schema = schema
        self.resolved = resolved
        super().__init__(
            f"search_path pin failed: schema {schema!r} does not exist or is not usable by this role "
            f"(current_schema() is {resolved!r}). Writes would have fallen through to "
            f"{resolved or 'nothing'!s}; this transaction's search_path is now empty. Compose schema "
            "names with the pgswarm_schema fixture or pytest_pgswarm.worker_schema(), never by hand."
        )


def quote_ident(name: str) -> str:
    """PostgreSQL identifier quoting; refuses names the server would cut or cannot store."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"schema name must be a non-empty string, got {name!r}")
    if "\x00" in name:
        raise ValueError("schema name contains a NUL byte")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise ValueError(
            f"schema name {name!r} is {len(name.encode())} bytes: PostgreSQL would silently cut it "
            f"to {MAX_NAME_BYTES}, possibly into another schema's name"
        )
    return '"' + name.replace('"', '""') + '"'


def worker_schema() -> str:
    """This worker's schema, from ``PGSWARM_SCHEMA`` that the plugin exports in every test process.

    For code without access to fixtures (module-level seeders, factories, app settings). Raises when
    the plugin is not active rather than guessing a legacy name like ``test_gw0``.
    """
    schema = os.environ.get("PGSWARM_SCHEMA")
    if not schema:
        raise PgswarmError(
            "PGSWARM_SCHEMA is not set: worker_schema() only works inside a pytest run with the "
            "pytest-pgswarm plugin active (or pass the schema explicitly)"
        )
    return schema


def _is_sqlalchemy(conn: Any) -> bool:
    return type(conn).__module__.startswith("sqlalchemy.")


def _autocommit(conn: Any) -> bool:
    """True when SET LOCAL would be a no-op: the statement would not run inside a transaction."""
    if _is_sqlalchemy(conn):
        if type(conn).__name__ == "Engine":
            return True  # an Engine has no transaction of its own
        if hasattr(conn, "get_bind") and not hasattr(conn, "dialect"):  # Session
            return _autocommit(conn.connection())
        dbapi = getattr(getattr(conn, "connection", None), "dbapi_connection", None)
        return bool(getattr(dbapi, "autocommit", False))
    owner = getattr(conn, "connection", None) if not hasattr(conn, "cursor") else conn
    return bool(getattr(owner, "autocommit", False))


def _runner(conn: Any) -> Any:
    """A function ``run(sql) -> first column of the first row or None`` for this connection."""
    if _is_sqlalchemy(conn):
        from sqlalchemy import text  # only when the caller already uses SQLAlchemy

        def run_sa(sql: str) -> Any:
            result = conn.execute(text(sql.replace(":", "\\:")))  # ':' would be a bind parameter
            return result.scalar() if result.returns_rows else None

        return run_sa
    cursor = conn.cursor() if hasattr(conn, "cursor") else conn  # a connection or a cursor

    def run_dbapi(sql: str) -> Any:
        cursor.execute(sql)
        if cursor.description is None:
            return None
        row = cursor.fetchone()
        return None if row is None else row[0]

    return run_dbapi


def pin_search_path(conn: Any, schema: Optional[str] = None, *, include_public: bool = False) -> str:
    """``SET LOCAL search_path`` to ``schema`` (default: this worker's) and prove it took.

    Runs inside the caller's current transaction (psycopg 3 / psycopg2 connections open one on the
    first statement, SQLAlchemy ``Connection`` / ``Session`` autobegin), so the pin lasts until that
    transaction ends: call it at the start of every transaction that writes. ``include_public``
    appends ``public`` after the schema (for extension functions installed there); the check still
    requires ``schema`` to be the one resolved. Returns the schema.

    Raises :class:`SchemaFallThrough` when the server does not resolve to ``schema`` (the
    transaction's search_path is then emptied), and :class:`PgswarmError` on an autocommit
    connection, where ``SET LOCAL`` would silently do nothing.
    """
    schema = worker_schema() if schema is None else schema
    quoted = quote_ident(schema)
    if _autocommit(conn):
        raise PgswarmError(
            "pin_search_path needs an open transaction: SET LOCAL does nothing on an autocommit "
            "connection (turn autocommit off, or use the connect args' session-level search_path)"
        )
    run = _runner(conn)
    run(f"SET LOCAL search_path TO {quoted}" + (", public" if include_public else ""))
    resolved = run("SELECT current_schema()")
    if resolved != schema:
        run("SET LOCAL search_path TO ''")  # fail closed even if the caller swallows the exception
        raise SchemaFallThrough(schema, resolved)
    return schema
