"""The pytest plugin: one namespace per invocation, one schema per worker, a label on every connection.

pytest-xdist isolates the workers *inside* one invocation; two invocations started seconds apart both
have a ``gw0``. This plugin makes the namespace token once, in the controller, hands it to every xdist
worker through ``workerinput`` (a worker that made its own would collide with nothing but also be
invisible as one invocation), and derives every name from it with :mod:`pytest_pgswarm.naming`, the
rules pgswarm parses. It exports the names for subprocesses (``PGSWARM_NAMESPACE``,
``PGSWARM_SCHEMA``, ``PGAPPNAME``) and restores the environment when pytest unconfigures.

A namespace found in ``PGSWARM_NAMESPACE`` is used (validated) when someone set it on purpose; one
this plugin exported itself (marked by ``PGSWARM_NAMESPACE_EXPORTED``, e.g. a pytest started from a
test) is not reused: a nested run with the same namespace and worker would drop its parent's schema.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

from . import naming
from .pin import PgswarmError
from .schemas import ADMIN_SUFFIX, Database, WorkerSchemas, parse_databases, split_env_databases

ENV_NAMESPACE = "PGSWARM_NAMESPACE"
ENV_EXPORTED = "PGSWARM_NAMESPACE_EXPORTED"
ENV_SCHEMA = "PGSWARM_SCHEMA"
ENV_DATABASES = "PGSWARM_TEST_DATABASES"
WORKERINPUT_KEY = "pgswarm_namespace"

_LOCK_TIMEOUT = re.compile(r"(0|[1-9][0-9]*)(us|ms|s|min|h|d)?")


@dataclass(frozen=True)
class Settings:
    """Everything the fixtures hand out, fixed once per process at configure time."""

    namespace: str
    worker: str
    schema: str
    app_prefix: str = naming.DEFAULT_APP_PREFIX
    schema_prefix: str = naming.DEFAULT_SCHEMA_PREFIX
    search_path_public: bool = False
    lock_timeout: str = "5s"
    databases: Tuple[Database, ...] = ()
    keep_schemas: bool = False
    set_pgappname: bool = True
    is_xdist_controller: bool = False
    namespace_source: str = "generated"

    def application_name(self, suffix: Optional[str] = None) -> str:
        """``{app_prefix}_{worker}_{namespace}[_{suffix}]``; raises NamingError if it would be cut."""
        return naming.application_name(self.namespace, self.worker, suffix, self.app_prefix)

    def max_suffix_bytes(self) -> int:
        """How long a suffix may be for this worker (a suffix also costs its '_')."""
        return naming.max_suffix_bytes(self.namespace, self.worker, self.app_prefix)

    def search_path(self) -> str:
        return self.schema + (",public" if self.search_path_public else "")

    def connect_args(self, suffix: Optional[str] = None) -> Dict[str, str]:
        """kwargs for ``psycopg.connect`` / ``psycopg2.connect`` / SQLAlchemy ``connect_args``."""
        return {
            "application_name": self.application_name(suffix),
            "options": f"-c search_path={self.search_path()} -c lock_timeout={self.lock_timeout}",
        }

    def asyncpg_connect_args(self, suffix: Optional[str] = None) -> Dict[str, Dict[str, str]]:
        """kwargs for ``asyncpg.connect`` / ``create_pool`` (it takes ``server_settings``)."""
        return {
            "server_settings": {
                "application_name": self.application_name(suffix),
                "search_path": self.search_path(),
                "lock_timeout": self.lock_timeout,
            }
        }


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pgswarm", "per-invocation PostgreSQL schemas (pytest-pgswarm)")
    group.addoption(
        "--pgswarm-db",
        action="append",
        default=[],
        dest="pgswarm_db",
        metavar="URL",
        help="test database (postgres:// URL or libpq key=value string, optionally NAME=...) in which "
        "each worker gets its schema; repeatable. Overrides PGSWARM_TEST_DATABASES and the "
        "pgswarm_databases ini option.",
    )
    group.addoption(
        "--pgswarm-keep-schemas",
        action="store_true",
        default=False,
        dest="pgswarm_keep_schemas",
        help="do not drop this run's worker schemas at the end (`pgswarm sweep` can drop them later)",
    )
    parser.addini("pgswarm_databases", "test databases, one per line", type="linelist", default=[])
    parser.addini(
        "pgswarm_search_path_public",
        "also put public on the connect args' search_path (default: only the worker schema)",
        type="bool",
        default=False,
    )
    parser.addini("pgswarm_lock_timeout", "lock_timeout of labeled connections", default="5s")
    parser.addini(
        "pgswarm_pgappname",
        "export PGAPPNAME so libpq connections made by other code are labeled too",
        type="bool",
        default=True,
    )
    parser.addini("pgswarm_app_prefix", "application_name prefix", default=naming.DEFAULT_APP_PREFIX)
    parser.addini("pgswarm_schema_prefix", "schema prefix", default=naming.DEFAULT_SCHEMA_PREFIX)


def _is_xdist_controller(config: pytest.Config) -> bool:
    return not hasattr(config, "workerinput") and getattr(config.option, "dist", "no") != "no"


def _namespace(config: pytest.Config) -> Tuple[str, str]:
    """(namespace, where it came from). Raises UsageError for an invalid explicit namespace."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        ns = workerinput.get(WORKERINPUT_KEY)
        if not ns:  # a worker never makes its own: it would be an invocation of its own
            raise pytest.UsageError(
                "pgswarm: the xdist controller passed no namespace to this worker (is the "
                "pytest-pgswarm plugin disabled in the controller?)"
            )
        return naming.validate_namespace(ns), "controller"
    explicit = os.environ.get(ENV_NAMESPACE, "")
    if explicit and os.environ.get(ENV_EXPORTED) != explicit:
        try:
            return naming.validate_namespace(explicit), f"{ENV_NAMESPACE} (explicit)"
        except naming.NamingError as e:
            raise pytest.UsageError(f"pgswarm: {ENV_NAMESPACE}: {e}") from None
    return naming.generate_namespace(), "generated"


def _databases(config: pytest.Config) -> Tuple[Database, ...]:
    entries: List[str] = list(config.getoption("pgswarm_db") or [])
    if not entries and os.environ.get(ENV_DATABASES, "").strip():
        entries = split_env_databases(os.environ[ENV_DATABASES])
    if not entries:
        entries = list(config.getini("pgswarm_databases"))
    try:
        return tuple(parse_databases(entries))
    except (PgswarmError, ValueError) as e:
        raise pytest.UsageError(f"pgswarm: bad test database entry: {e}") from None


def _settings(config: pytest.Config) -> Settings:
    namespace, source = _namespace(config)
    workerinput = getattr(config, "workerinput", None)
    worker = workerinput["workerid"] if workerinput is not None else "master"
    lock_timeout = str(config.getini("pgswarm_lock_timeout")).strip().replace(" ", "")
    if not _LOCK_TIMEOUT.fullmatch(lock_timeout):
        raise pytest.UsageError(
            f"pgswarm: pgswarm_lock_timeout {lock_timeout!r}: use a number with an optional unit "
            "(ms, s, min, h, d), e.g. 5s or 500ms; 0 disables the timeout"
        )
    try:
        app_prefix = naming.validate_prefix("pgswarm_app_prefix", config.getini("pgswarm_app_prefix"))
        schema_prefix = naming.validate_prefix(
            "pgswarm_schema_prefix", config.getini("pgswarm_schema_prefix")
        )
        settings = Settings(
            namespace=namespace,
            worker=naming.validate_worker(worker),
            schema=naming.schema_name(namespace, worker, schema_prefix),
            app_prefix=app_prefix,
            schema_prefix=schema_prefix,
            search_path_public=bool(config.getini("pgswarm_search_path_public")),
            lock_timeout=lock_timeout,
            databases=_databases(config),
            keep_schemas=bool(config.getoption("pgswarm_keep_schemas")),
            set_pgappname=bool(config.getini("pgswarm_pgappname")),
            is_xdist_controller=_is_xdist_controller(config),
            namespace_source=source,
        )
        settings.application_name()  # the bare label must fit, whatever the prefix
    except naming.NamingError as e:
        raise pytest.UsageError(f"pgswarm: {e}") from None
    return settings


_SETTINGS = pytest.StashKey[Settings]()
_SAVED_ENV = pytest.StashKey[Dict[str, Optional[str]]]()


def get_settings(config: pytest.Config) -> Settings:
    """The plugin's settings for this pytest process (for hooks and other plugins)."""
    return config.stash[_SETTINGS]


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    settings = _settings(config)
    config.stash[_SETTINGS] = settings
    env: Dict[str, Optional[str]] = {
        ENV_NAMESPACE: settings.namespace,
        ENV_EXPORTED: settings.namespace,
        # The controller of an xdist run has no schema of its own; its workers set theirs.
        ENV_SCHEMA: None if settings.is_xdist_controller else settings.schema,
    }
    if settings.set_pgappname:
        env["PGAPPNAME"] = settings.application_name()
    config.stash[_SAVED_ENV] = {k: os.environ.get(k) for k in env}
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def pytest_unconfigure(config: pytest.Config) -> None:
    for key, value in config.stash.get(_SAVED_ENV, {}).items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist (controller side): every worker of this invocation gets the controller's namespace."""
    node.workerinput[WORKERINPUT_KEY] = get_settings(node.config).namespace


def pytest_report_header(config: pytest.Config) -> List[str]:
    s = get_settings(config)
    dbs = ", ".join(d.display() for d in s.databases) or "none configured"
    return [
        f"pgswarm: namespace {s.namespace} ({s.namespace_source}), schema "
        f"{s.schema_prefix}_{s.namespace}_<worker>, databases: {dbs}"
    ]


# --- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def pgswarm_settings(pytestconfig: pytest.Config) -> Settings:
    """All of the plugin's names and options for this worker."""
    return get_settings(pytestconfig)


@pytest.fixture(scope="session", autouse=True)
def _pgswarm_worker_schemas(pgswarm_settings: Settings) -> Iterator[List[Database]]:
    s = pgswarm_settings
    if not s.databases or s.is_xdist_controller:
        yield []
        return
    try:
        admin_label = s.application_name(ADMIN_SUFFIX)
    except naming.NamingError:
        admin_label = s.application_name()
    schemas = WorkerSchemas(s.databases, s.schema, admin_label)
    try:
        schemas.create()
    except BaseException:
        schemas.drop(keep=s.keep_schemas)  # what was created already, and the held connections
        raise
    yield list(s.databases)
    schemas.drop(keep=s.keep_schemas)


@pytest.fixture(scope="session")
def pgswarm_namespace(pgswarm_settings: Settings) -> str:
    """This invocation's namespace token (shared by all its xdist workers)."""
    return pgswarm_settings.namespace


@pytest.fixture(scope="session")
def pgswarm_worker(pgswarm_settings: Settings) -> str:
    """``gw0``, ``gw1``, ... under xdist, else ``master``."""
    return pgswarm_settings.worker


@pytest.fixture(scope="session")
def pgswarm_schema(pgswarm_settings: Settings, _pgswarm_worker_schemas: List[Database]) -> str:
    """This worker's schema, ``test_{namespace}_{worker}`` (created in every configured database)."""
    return pgswarm_settings.schema


@pytest.fixture(scope="session")
def pgswarm_databases(_pgswarm_worker_schemas: List[Database], pgswarm_settings: Settings) -> List[str]:
    """The configured test databases' connection strings (the schema exists in each)."""
    return [d.conninfo for d in pgswarm_settings.databases]


@pytest.fixture(scope="session")
def pgswarm_application_name(pgswarm_settings: Settings) -> Callable[..., str]:
    """``pgswarm_application_name(suffix=None)`` → this worker's label, refused if it would be cut."""
    return pgswarm_settings.application_name


@pytest.fixture(scope="session")
def pgswarm_connect_args(pgswarm_settings: Settings) -> Callable[..., Dict[str, str]]:
    """``pgswarm_connect_args(suffix=None)`` → ``{"application_name": ..., "options": ...}``."""
    return pgswarm_settings.connect_args


@pytest.fixture(scope="session")
def pgswarm_asyncpg_connect_args(
    pgswarm_settings: Settings,
) -> Callable[..., Dict[str, Dict[str, str]]]:
    """``pgswarm_asyncpg_connect_args(suffix=None)`` → ``{"server_settings": {...}}`` for asyncpg."""
    return pgswarm_settings.asyncpg_connect_args
