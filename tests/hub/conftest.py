"""One private PostgreSQL cluster per test session (initdb in a temporary directory, as ``nobody``
when we are root), a fresh database per test that asks for one, removed afterwards.

Set GRIDTAP_HUB_TEST_DSN to use an existing server instead (a role that may CREATE DATABASE);
the tests then create and drop their own databases there.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator

import pytest

psycopg = pytest.importorskip("psycopg")

from gridtap_hub import schema  # noqa: E402
from gridtap_hub.cluster import PrivateCluster  # noqa: E402

_n = itertools.count()


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """A DSN for a server on which tests may create databases."""
    given = os.environ.get("GRIDTAP_HUB_TEST_DSN")
    if given:
        yield given
        return
    with PrivateCluster() as cl:
        yield cl.dsn


def _with_db(dsn: str, name: str) -> str:
    parts = [p for p in dsn.split() if not p.startswith("dbname=")]
    return " ".join([*parts, f"dbname={name}"])


@pytest.fixture
def hub_dsn(pg_server: str) -> Iterator[str]:
    """A new empty database with the hub's schema; dropped after the test."""
    name = f"hubtest_{os.getpid()}_{next(_n)}"
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    dsn = _with_db(pg_server, name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        schema.create(conn, time.time())
    yield dsn
    with psycopg.connect(pg_server, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def hub_conn(hub_dsn: str) -> Iterator[psycopg.Connection]:  # type: ignore[name-defined]
    with psycopg.connect(hub_dsn, autocommit=True) as conn:
        yield conn
