"""The naming convention pgswarm reads, produced exactly as pgswarm parses it.

pgswarm never asks the test runner anything: which invocation a session belongs to and which schemas
are stale both come from names (docs/naming.md, src/domain/naming.rs). A name pgswarm cannot parse
is worse than none: an ``application_name`` it cannot attribute blocks every sweep, and one attributed
to the wrong namespace could let a sweep drop a live run's schemas. So every name is built and checked
here, against the same rules:

- namespace: 1 to 32 of ``[a-z0-9]`` (no underscore: that keeps the suffix boundary unambiguous);
  generated as ``p{pid}t{epoch}r{8 hex}`` so pgswarm can decode the run's pid and start time;
- worker: ``gw<N>`` (no leading zeros) or ``master``;
- schema: ``{schema_prefix}_{namespace}_{worker}``, at most 63 bytes (PostgreSQL cuts identifiers);
- ``application_name``: ``{app_prefix}_{worker}_{namespace}[_{suffix}]``, at most 62 bytes. PostgreSQL
  keeps 63 bytes and silently cuts the rest; pgswarm treats a label of exactly 63 bytes as possibly
  cut (a suffix flagged ``suffix_maybe_truncated``, a namespace *unattributed*), so the plugin stays
  one byte below and refuses any suffix that does not fit instead of letting the server cut it.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from typing import Optional

#: PostgreSQL keeps this many bytes of an identifier or an ``application_name`` (NAMEDATALEN - 1).
MAX_NAME_BYTES = 63
#: Longest label the plugin produces: one byte below the cut, so pgswarm never suspects one.
MAX_LABEL_BYTES = MAX_NAME_BYTES - 1
#: Longest namespace the convention allows.
MAX_NAMESPACE_LEN = 32

DEFAULT_APP_PREFIX = "pytest"
DEFAULT_SCHEMA_PREFIX = "test"

_NAMESPACE = re.compile(r"[a-z0-9]{1,32}")
_TOKEN = re.compile(r"p(\d+)t(\d+)r([0-9a-f]{8})")
_WORKER = re.compile(r"master|gw(0|[1-9][0-9]*)")
_PREFIX = re.compile(r"[a-z0-9_]{1,40}")
# Suffixes are free-form for pgswarm (everything after the namespace's '_'); the plugin keeps them to
# characters that survive the libpq `options` string, shell quoting and log greps unchanged.
_SUFFIX = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class NamingError(ValueError):
    """A name that pgswarm would not parse as the plugin means it (the message says what is allowed)."""


def generate_namespace(pid: Optional[int] = None, epoch: Optional[int] = None) -> str:
    """A fresh token ``p{pid}t{epoch}r{hex8}`` with 32 bits of ``os.urandom`` entropy."""
    pid = os.getpid() if pid is None else pid
    epoch = int(time.time()) if epoch is None else epoch
    token = f"p{pid}t{epoch}r{secrets.token_hex(4)}"
    return validate_namespace(token)


def validate_namespace(namespace: str) -> str:
    """Returns ``namespace`` if pgswarm accepts it, else raises :class:`NamingError`."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise NamingError(
            f"invalid pgswarm namespace {namespace!r}: use 1 to {MAX_NAMESPACE_LEN} characters of "
            "a-z and 0-9 (no underscores, hyphens or capitals; e.g. 'mydebug')"
        )
    return namespace


def is_generated(namespace: str) -> bool:
    """True for a ``p{pid}t{epoch}r{hex8}`` token (pgswarm decodes its age); False for a forced one."""
    m = _TOKEN.fullmatch(namespace)
    return m is not None and int(m.group(1)) < 2**32


def validate_worker(worker: str) -> str:
    if not isinstance(worker, str) or not _WORKER.fullmatch(worker):
        raise NamingError(f"invalid worker id {worker!r}: expected 'master' or gw<N> (gw0, gw1, ...)")
    return worker


def validate_prefix(what: str, prefix: str) -> str:
    """Same rule as pgswarm's ``--app-prefix`` / ``--schema-prefix``."""
    if not _PREFIX.fullmatch(prefix) or prefix.endswith("_"):
        raise NamingError(
            f"invalid {what} {prefix!r}: use 1 to 40 characters of a-z, 0-9 and '_', not ending in "
            "'_' (the '_' separator is added)"
        )
    return prefix


def schema_name(namespace: str, worker: str, schema_prefix: str = DEFAULT_SCHEMA_PREFIX) -> str:
    """``{schema_prefix}_{namespace}_{worker}``: the one schema of this worker of this invocation."""
    name = (
        f"{validate_prefix('schema prefix', schema_prefix)}_"
        f"{validate_namespace(namespace)}_{validate_worker(worker)}"
    )
    if len(name.encode()) > MAX_NAME_BYTES:
        raise NamingError(
            f"schema name {name!r} is {len(name.encode())} bytes; PostgreSQL would cut it to "
            f"{MAX_NAME_BYTES}: shorten the schema prefix or the namespace"
        )
    return name


def application_name(
    namespace: str,
    worker: str,
    suffix: Optional[str] = None,
    app_prefix: str = DEFAULT_APP_PREFIX,
) -> str:
    """``{app_prefix}_{worker}_{namespace}[_{suffix}]``, refused when it would not fit in 62 bytes."""
    label = (
        f"{validate_prefix('app prefix', app_prefix)}_{validate_worker(worker)}_"
        f"{validate_namespace(namespace)}"
    )
    if suffix is not None:
        if not isinstance(suffix, str) or not _SUFFIX.fullmatch(suffix):
            raise NamingError(
                f"invalid application_name suffix {suffix!r}: use letters, digits, '_', '.' and '-', "
                "starting with a letter or digit"
            )
        label = f"{label}_{suffix}"
    size = len(label.encode())
    if size > MAX_LABEL_BYTES:
        base = len(f"{app_prefix}_{worker}_{namespace}".encode())
        room = MAX_LABEL_BYTES - base - 1
        what = f"suffix {suffix!r}" if suffix is not None else "label"
        raise NamingError(
            f"application_name {label!r} is {size} bytes: PostgreSQL keeps {MAX_NAME_BYTES} and "
            f"pgswarm treats a {MAX_NAME_BYTES}-byte label as possibly cut. The {what} does not fit"
            + (f"; at most {max(room, 0)} bytes of suffix fit here" if suffix is not None else "")
        )
    return label


def max_suffix_bytes(namespace: str, worker: str, app_prefix: str = DEFAULT_APP_PREFIX) -> int:
    """How many bytes of suffix still fit (0: none; a suffix also costs its '_' separator)."""
    base = application_name(namespace, worker, None, app_prefix)
    return max(MAX_LABEL_BYTES - len(base) - 1, 0)
