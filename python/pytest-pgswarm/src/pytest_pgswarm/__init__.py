"""pytest-pgswarm: per-invocation PostgreSQL test schemas that pgswarm can read.

Every pytest invocation gets a namespace token, every xdist worker a schema
``test_{namespace}_{worker}``, every connection an ``application_name``
``pytest_{worker}_{namespace}[_{suffix}]``, so parallel invocations never share a schema and a lock
wait can be traced to the invocation on the other side. :func:`pin_search_path` is the one helper
every fixture and seeder uses to point a transaction at the worker schema: it fails instead of
silently falling through to ``public``.
"""

from .naming import (
    MAX_LABEL_BYTES,
    MAX_NAME_BYTES,
    NamingError,
    application_name,
    generate_namespace,
    schema_name,
    validate_namespace,
)
from .pin import PgswarmError, SchemaFallThrough, pin_search_path, quote_ident, worker_schema
from .schemas import PgswarmWarning

__all__ = [
    "MAX_LABEL_BYTES",
    "MAX_NAME_BYTES",
    "NamingError",
    "PgswarmError",
    "PgswarmWarning",
    "SchemaFallThrough",
    "application_name",
    "generate_namespace",
    "pin_search_path",
    "quote_ident",
    "schema_name",
    "validate_namespace",
    "worker_schema",
]
__version__ = "0.1.0"
