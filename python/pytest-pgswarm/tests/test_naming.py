"""The names the plugin produces, checked against pgswarm's parse rules (src/domain/naming.rs).

``parse_label`` below restates pgswarm's label parser in Python so every produced label can be checked
for what pgswarm will make of it; the end-to-end tests (test_swarm.py) check the same with the real
binary.
"""

from __future__ import annotations

import os
import re
import time
from typing import Optional, Tuple

import pytest

from pytest_pgswarm import naming
from pytest_pgswarm.naming import NamingError
from pytest_pgswarm.pin import quote_ident
from pytest_pgswarm.plugin import Settings
from pytest_pgswarm.schemas import Database


def parse_label(prefix: str, name: str) -> Tuple[str, Optional[str], Optional[str], bool]:
    """pgswarm's parse_label: (kind, namespace, suffix, suffix_maybe_truncated)."""
    if not name.startswith(prefix + "_"):
        return ("unlabeled", None, None, False)
    rest = name[len(prefix) + 1 :]
    may_be_cut = len(name.encode()) >= 63
    worker, _, rest2 = rest.partition("_")
    if not re.fullmatch(r"master|gw(0|[1-9][0-9]*)", worker):
        return ("unattributed", None, None, False)
    if "_" not in rest:
        return ("unattributed", None, None, False)
    ns, sep, suffix = rest2.partition("_")
    if not re.fullmatch(r"[a-z0-9]{1,32}", ns):
        return ("unattributed", None, None, False)
    if not sep and may_be_cut and len(ns) < 32:
        return ("unattributed", None, None, False)
    return ("labeled", ns, suffix if sep else None, bool(sep) and may_be_cut)


def test_generated_namespace_is_a_decodable_token() -> None:
    before = int(time.time())
    ns = naming.generate_namespace()
    m = re.fullmatch(r"p(\d+)t(\d+)r([0-9a-f]{8})", ns)
    assert m, ns
    assert int(m.group(1)) == os.getpid()
    assert before <= int(m.group(2)) <= int(time.time())
    assert naming.is_generated(ns)
    assert len(ns) <= naming.MAX_NAMESPACE_LEN
    # the largest pid and a 10-digit epoch still fit in 32 characters
    assert len(naming.generate_namespace(pid=2**32 - 1, epoch=9_999_999_999)) == 31
    assert len({naming.generate_namespace() for _ in range(200)}) == 200, "32 random bits each"


@pytest.mark.parametrize("ns", ["mydebug", "a", "x" * 32, "p1t2r0000000a", "0123"])
def test_valid_forced_namespaces(ns: str) -> None:
    assert naming.validate_namespace(ns) == ns


@pytest.mark.parametrize(
    "ns", ["", "my_debug", "my-debug", "MyDebug", "x" * 33, "déjà", "a b", "ns\n", None]
)
def test_invalid_namespaces_are_refused(ns: Optional[str]) -> None:
    with pytest.raises(NamingError, match="a-z and 0-9"):
        naming.validate_namespace(ns)  # type: ignore[arg-type]


def test_forced_namespace_is_not_a_token() -> None:
    assert not naming.is_generated("mydebug")
    assert not naming.is_generated("p1t2r123")  # 7 hex digits
    assert not naming.is_generated("p99999999999t2r12345678")  # pid over u32


@pytest.mark.parametrize("worker", ["master", "gw0", "gw7", "gw10", "gw123"])
def test_workers(worker: str) -> None:
    assert naming.validate_worker(worker) == worker


@pytest.mark.parametrize("worker", ["gw01", "gw", "GW0", "gw-1", "main", "gw0 "])
def test_bad_workers(worker: str) -> None:
    with pytest.raises(NamingError):
        naming.validate_worker(worker)


def test_schema_names() -> None:
    ns = "p18234t1745178234r3af93d71"
    assert naming.schema_name(ns, "gw0") == f"test_{ns}_gw0"
    assert naming.schema_name("mydebug", "master", "itest") == "itest_mydebug_master"
    with pytest.raises(NamingError, match="would cut"):
        naming.schema_name("x" * 32, "gw0", "p" * 30)  # 30 + 1 + 32 + 1 + 3 = 67 bytes
    with pytest.raises(NamingError, match="schema prefix"):
        naming.schema_name(ns, "gw0", "test_")


def test_labels_parse_as_pgswarm_parses_them() -> None:
    ns = "p18234t1745178234r3af93d71"
    assert naming.application_name(ns, "gw0") == "pytest_gw0_p18234t1745178234r3af93d71"
    label = naming.application_name(ns, "gw0", "concurrency")
    assert label == "pytest_gw0_p18234t1745178234r3af93d71_concurrency"
    assert parse_label("pytest", label) == ("labeled", ns, "concurrency", False)
    assert parse_label("pytest", naming.application_name("mydebug", "master", "a_b")) == (
        "labeled", "mydebug", "a_b", False,
    )


@pytest.mark.parametrize(
    "ns,worker,prefix",
    [
        ("p18234t1745178234r3af93d71", "gw0", "pytest"),
        ("p4194304t9999999999rffffffff", "gw127", "pytest"),
        ("x" * 32, "master", "pytest"),
        ("mydebug", "gw3", "a_long_application_prefix_x"),
    ],
)
def test_63_byte_limit_longest_suffix_fits_and_one_more_is_refused(
    ns: str, worker: str, prefix: str
) -> None:
    room = naming.max_suffix_bytes(ns, worker, prefix)
    longest = naming.application_name(ns, worker, "s" * room, prefix) if room else None
    if longest is not None:
        assert len(longest.encode()) == naming.MAX_LABEL_BYTES == 62
        # below 63 bytes, pgswarm never suspects a cut: attributed, suffix not flagged
        assert parse_label(prefix, longest) == ("labeled", ns, "s" * room, False)
    with pytest.raises(NamingError, match=rf"at most {room} bytes of suffix fit"):
        naming.application_name(ns, worker, "s" * (room + 1), prefix)


def test_a_label_that_cannot_fit_is_refused_even_without_suffix() -> None:
    with pytest.raises(NamingError, match="does not fit"):
        naming.application_name("x" * 32, "gw0", None, "p" * 30)  # 30+1+3+1+32 = 67


@pytest.mark.parametrize("suffix", ["", "_x", "a b", "a,b", "é", "-x", "x'y", "a\\b"])
def test_suffixes_that_would_not_survive_are_refused(suffix: str) -> None:
    with pytest.raises(NamingError, match="suffix"):
        naming.application_name("mydebug", "gw0", suffix)


@pytest.mark.parametrize("prefix", ["", "Py", "a-b", "x_", "a b", "a" * 41])
def test_prefixes_follow_pgswarm_rules(prefix: str) -> None:
    with pytest.raises(NamingError, match="prefix"):
        naming.validate_prefix("app prefix", prefix)


def _settings(**kw: object) -> Settings:
    ns = "p18234t1745178234r3af93d71"
    base = dict(namespace=ns, worker="gw1", schema=f"test_{ns}_gw1")
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def test_connect_args_pin_the_worker_schema_without_public() -> None:
    s = _settings()
    assert s.connect_args() == {
        "application_name": "pytest_gw1_p18234t1745178234r3af93d71",
        "options": "-c search_path=test_p18234t1745178234r3af93d71_gw1 -c lock_timeout=5s",
    }
    assert s.connect_args("seed")["application_name"].endswith("_seed")
    assert "public" not in s.connect_args()["options"]


def test_connect_args_with_public_and_a_lock_timeout() -> None:
    s = _settings(search_path_public=True, lock_timeout="750ms")
    assert s.connect_args()["options"] == (
        "-c search_path=test_p18234t1745178234r3af93d71_gw1,public -c lock_timeout=750ms"
    )


def test_asyncpg_form() -> None:
    assert _settings().asyncpg_connect_args("pool") == {
        "server_settings": {
            "application_name": "pytest_gw1_p18234t1745178234r3af93d71_pool",
            "search_path": "test_p18234t1745178234r3af93d71_gw1",
            "lock_timeout": "5s",
        }
    }


def test_connect_args_refuse_a_suffix_that_would_be_cut() -> None:
    with pytest.raises(NamingError, match="at most 24 bytes"):
        _settings().connect_args("x" * 25)
    assert len(_settings().connect_args("x" * 24)["application_name"]) == 62


@pytest.mark.parametrize(
    "entry,conninfo,name",
    [
        ("postgres://ci@db1/platform_test", "postgres://ci@db1/platform_test", None),
        ("host=/tmp dbname=a_test", "host=/tmp dbname=a_test", None),
        ("platform=postgres://h/db", "postgres://h/db", "platform"),
        ("tenant_a=host=/tmp dbname=t", "host=/tmp dbname=t", "tenant_a"),
        ("app_test", "dbname=app_test", "app_test"),
    ],
)
def test_database_entries_like_pgswarm_db(entry: str, conninfo: str, name: Optional[str]) -> None:
    db = Database.parse(entry)
    assert (db.conninfo, db.name) == (conninfo, name)


def test_database_display_hides_passwords() -> None:
    assert "hunter2" not in Database.parse("postgres://u:hunter2@h/db").display()
    assert "hunter2" not in Database.parse("host=h password=hunter2 dbname=d").display()


def test_quote_ident() -> None:
    assert quote_ident("test_x_gw0") == '"test_x_gw0"'
    assert quote_ident('We"ird') == '"We""ird"'
    with pytest.raises(ValueError, match="cut"):
        quote_ident("x" * 64)
    with pytest.raises(ValueError):
        quote_ident("")
