"""Connections to the hub's PostgreSQL: the DSN from the command line or the environment, a small pool."""

from __future__ import annotations

import os
import queue
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg

from gridtap.errors import UserError
from gridtap_hub import DSN_ENV


def dsn_from(arg: str | None) -> str:
    """``--dsn`` or else ``$GRIDTAP_HUB_DSN`` (which may hold a password: never printed)."""
    dsn = arg or os.environ.get(DSN_ENV, "")
    if not dsn:
        raise UserError(f"no PostgreSQL connection: give --dsn or set {DSN_ENV} "
                        "(e.g. 'host=/var/run/postgresql dbname=gridtap_hub')")
    return dsn


def connect(dsn: str) -> psycopg.Connection:
    """An autocommit connection: every write states its transaction explicitly."""
    try:
        return psycopg.connect(dsn, autocommit=True, connect_timeout=10)
    except psycopg.OperationalError as exc:
        # libpq's message names host and database, not the password
        raise UserError(f"cannot connect to PostgreSQL: {str(exc).strip()}") from None


class Pool:
    """At most ``size`` connections, made on demand; a broken one is replaced."""

    def __init__(self, dsn: str, size: int = 4) -> None:
        self.dsn = dsn
        self._free: queue.LifoQueue[psycopg.Connection | None] = queue.LifoQueue()
        for _ in range(size):
            self._free.put(None)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        conn = self._free.get()
        try:
            if conn is None or conn.closed:
                conn = connect(self.dsn)
            yield conn
        except psycopg.OperationalError:
            if conn is not None:
                conn.close()
            conn = None
            raise
        finally:
            self._free.put(conn)

    def close(self) -> None:
        while True:
            try:
                conn = self._free.get_nowait()
            except queue.Empty:
                return
            if conn is not None:
                conn.close()
