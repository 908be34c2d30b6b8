"""The durable queue of statuses not yet accepted by PVOutput (SQLite, WAL).

A status is keyed by its date and time, as PVOutput keys it, so writing the
same interval twice replaces it with the same status and a replay can never
create a duplicate. Every closed interval is written here *before* any send
is tried; it is deleted only when PVOutput accepted it or a documented
"skip" answer (or the age limit) says it can never be accepted.

The same database keeps the per-series counter state (interval base, day
base, reset offset) so that energy-today survives a daemon restart.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS status (
    d TEXT NOT NULL, t TEXT NOT NULL, fields TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (d, t)
);
CREATE TABLE IF NOT EXISTS series_state (name TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class Backlog:
    def __init__(self, path: Path | str) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def put(self, d: str, t: str, fields: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO status (d, t, fields, attempts) VALUES (?, ?, ?, 0)",
                        (d, t, json.dumps(fields, sort_keys=True)))

    def commit_interval(self, d: str, t: str, fields: dict[str, Any], states: dict[str, dict[str, Any]],
                        meta: dict[str, str]) -> None:
        """Queue one status and save the series state that produced it, atomically."""
        self._save((d, t, fields), states, meta)

    def save_progress(self, states: dict[str, dict[str, Any]], meta: dict[str, str]) -> None:
        """Save the series state and the grid position of an interval that sent nothing, atomically."""
        self._save(None, states, meta)

    def _save(self, status: tuple[str, str, dict[str, Any]] | None, states: dict[str, dict[str, Any]],
              meta: dict[str, str]) -> None:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            if status is not None:
                d, t, fields = status
                self.db.execute("INSERT OR REPLACE INTO status (d, t, fields, attempts) VALUES (?, ?, ?, 0)",
                                (d, t, json.dumps(fields, sort_keys=True)))
            for name, state in states.items():
                self.db.execute("INSERT OR REPLACE INTO series_state (name, state) VALUES (?, ?)",
                                (name, json.dumps(state)))
            for k, v in meta.items():
                self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def pending(self, limit: int) -> list[tuple[str, str, dict[str, Any], int]]:
        rows = self.db.execute("SELECT d, t, fields, attempts FROM status ORDER BY d, t LIMIT ?", (limit,))
        return [(d, t, json.loads(f), a) for d, t, f, a in rows]

    def count(self) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM status").fetchone()[0])

    def delete(self, keys: list[tuple[str, str]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany("DELETE FROM status WHERE d = ? AND t = ?", keys)
        self.db.execute("COMMIT")

    def older_than(self, d: str) -> list[tuple[str, str]]:
        return [(a, b) for a, b in self.db.execute("SELECT d, t FROM status WHERE d < ? ORDER BY d, t", (d,))]

    def attempt(self, keys: list[tuple[str, str]]) -> None:
        self.db.executemany("UPDATE status SET attempts = attempts + 1 WHERE d = ? AND t = ?", keys)

    def save_state(self, name: str, state: dict[str, Any]) -> None:
        self.db.execute("INSERT OR REPLACE INTO series_state (name, state) VALUES (?, ?)",
                        (name, json.dumps(state)))

    def load_states(self) -> dict[str, dict[str, Any]]:
        return {n: json.loads(s) for n, s in self.db.execute("SELECT name, state FROM series_state")}

    def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
