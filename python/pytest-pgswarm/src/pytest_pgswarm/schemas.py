"""This worker's schema in every test database: created at session start, dropped at the end.

Why the plugin and not each project's conftest: a worker must only ever create and drop *its own*
``{prefix}_{namespace}_{worker}`` schema, named by the same code that labels its connections, or two
invocations (or a seeder and an engine) drift apart again. Schemas of other namespaces are never
looked at; the ones a crashed run leaves behind are what ``pgswarm sweep`` removes, fail-closed.

While the session runs, the plugin keeps one idle, labeled connection per database
(``{app_prefix}_{worker}_{namespace}_pgswarm``). pgswarm decides that a namespace is live from its
sessions, so this keeps a concurrent ``pgswarm sweep`` from dropping the schemas of a run that is
merely between database tests. Each statement is bounded (``lock_timeout`` 5 s, ``statement_timeout``
30 s, ``connect_timeout`` 5 s), and each drop is its own transaction, as the sweep does.
"""

from __future__ import annotations

import re
import shlex
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .pin import PgswarmError, quote_ident

# libpq keywords (as pgswarm's src/pg/conninfo.rs knows them): `NAME=conninfo` vs `key=value`.
_LIBPQ_KEYWORDS = frozenset(
    """host hostaddr port dbname user password passfile connect_timeout options sslmode sslrootcert
    application_name fallback_application_name client_encoding keepalives keepalives_idle
    keepalives_interval keepalives_count tcp_user_timeout target_session_attrs channel_binding
    gssencmode sslcompression sslsni load_balance_hosts service sslcert sslkey sslpassword sslcrl
    sslcrldir requirepeer krbsrvname gsslib ssl_min_protocol_version ssl_max_protocol_version
    require_auth""".split()
)
_NAMED = re.compile(r"([A-Za-z_][A-Za-z0-9_.-]*)=(.+)", re.S)

ADMIN_SUFFIX = "pgswarm"
ADMIN_OPTIONS = "-c lock_timeout=5s -c statement_timeout=30s"
CONNECT_TIMEOUT_S = 5


class PgswarmWarning(UserWarning):
    """Something the plugin could not clean up or had to assume (the run itself is not failed)."""


@dataclass(frozen=True)
class Database:
    """One test database: a ``postgres://`` URL or a libpq ``key=value`` string, optionally named."""

    conninfo: str
    name: Optional[str] = None

    @classmethod
    def parse(cls, entry: str) -> "Database":
        """Accepts what ``pgswarm --db`` accepts: ``[NAME=]CONNINFO`` or a bare database name."""
        entry = entry.strip()
        if not entry:
            raise PgswarmError("empty database entry")
        if entry.startswith(("postgres://", "postgresql://")):
            return cls(entry)
        m = _NAMED.fullmatch(entry)
        if m and m.group(1) not in _LIBPQ_KEYWORDS:
            inner = cls.parse(m.group(2))
            return cls(inner.conninfo, m.group(1))
        if "=" not in entry:
            return cls(f"dbname={quote_conninfo_value(entry)}", entry)
        return cls(entry)

    def display(self) -> str:
        """For messages: the name, else the conninfo with any password removed."""
        if self.name:
            return self.name
        text = re.sub(r"(://[^:/@]*):[^@/]*@", r"\1:***@", self.conninfo)
        return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", text)


def quote_conninfo_value(value: str) -> str:
    if value and re.fullmatch(r"[^\s'\\]+", value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def parse_databases(entries: Sequence[str]) -> List[Database]:
    return [Database.parse(e) for e in entries if e.strip()]


def split_env_databases(value: str) -> List[str]:
    """``PGSWARM_TEST_DATABASES``: entries separated by whitespace, a ``key=value`` one in quotes."""
    return shlex.split(value)


def connect(db: Database, application_name: str, options: str = ADMIN_OPTIONS) -> Any:
    """An autocommit connection with psycopg 3, else psycopg2 (whichever the project has)."""
    kwargs: Dict[str, Any] = dict(
        application_name=application_name, options=options, connect_timeout=CONNECT_TIMEOUT_S
    )
    try:
        import psycopg
    except ImportError:
        pass
    else:
        return psycopg.connect(db.conninfo, autocommit=True, **kwargs)
    try:
        import psycopg2  # type: ignore[import-untyped, unused-ignore]
    except ImportError:
        raise PgswarmError(
            "pytest-pgswarm needs a PostgreSQL driver to create the worker schemas: "
            "pip install 'psycopg[binary]' (or psycopg2-binary)"
        ) from None
    conn = psycopg2.connect(db.conninfo, **kwargs)
    conn.autocommit = True
    return conn


def _execute(conn: Any, sql: str, params: Sequence[Any] = ()) -> List[Any]:
    cur = conn.cursor()
    try:
        cur.execute(sql, tuple(params) or None)
        return list(cur.fetchall()) if cur.description is not None else []
    finally:
        cur.close()


class WorkerSchemas:
    """Creates ``schema`` in each database and holds a labeled connection there until :meth:`drop`."""

    def __init__(self, databases: Sequence[Database], schema: str, admin_label: str) -> None:
        self.databases = list(databases)
        self.schema = schema
        self.admin_label = admin_label
        self._held: List[Tuple[Database, Any]] = []

    def create(self) -> None:
        quoted = quote_ident(self.schema)
        for db in self.databases:
            try:
                conn = connect(db, self.admin_label)
            except Exception as e:
                raise PgswarmError(
                    f"pgswarm: cannot connect to test database {db.display()} to create schema "
                    f"{self.schema}: {e}"
                ) from e
            self._held.append((db, conn))
            try:
                existed = _execute(conn, "SELECT 1 FROM pg_namespace WHERE nspname = %s", [self.schema])
                _execute(conn, f"CREATE SCHEMA IF NOT EXISTS {quoted}")
            except Exception as e:
                raise PgswarmError(
                    f"pgswarm: cannot create schema {self.schema} in {db.display()}: {e}"
                ) from e
            if existed:
                warnings.warn(
                    PgswarmWarning(
                        f"schema {self.schema} already existed in {db.display()} (kept by an earlier "
                        "run with the same forced PGSWARM_NAMESPACE?); reusing it"
                    ),
                    stacklevel=2,
                )

    def drop(self, keep: bool = False) -> List[str]:
        """Drops the schema in every database (unless ``keep``); returns what could not be dropped."""
        failures: List[str] = []
        quoted = quote_ident(self.schema)
        for db, conn in self._held:
            try:
                if not keep:
                    _execute(conn, f"DROP SCHEMA IF EXISTS {quoted} CASCADE")
            except Exception as e:
                failures.append(f"{self.schema} in {db.display()}: {e}".strip())
            finally:
                try:
                    conn.close()
                except Exception:
                    pass
        self._held = []
        if failures:
            warnings.warn(
                PgswarmWarning(
                    "pgswarm: could not drop " + "; ".join(failures)
                    + " (`pgswarm sweep` removes such schemas once this run has ended)"
                ),
                stacklevel=2,
            )
        return failures
