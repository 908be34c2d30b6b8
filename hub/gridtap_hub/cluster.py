"""A private PostgreSQL cluster in a directory: for tests, the bench and trying the hub out.

PostgreSQL refuses to run as root, so when we are root the cluster runs as an
unprivileged system user (``nobody`` unless told otherwise) that owns the
directory. It listens only on a unix socket inside the directory (no TCP
port, nothing reachable from outside), with trust authentication for that
socket's owner, which is fine because only processes that can reach the
directory can connect.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

SUPERUSER = "hub"


def pg_bindir() -> Path:
    """The newest installed PostgreSQL server's bin directory (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError("PostgreSQL server binaries not found: install postgresql-15 (make setup)")
    return Path(initdb).parent


class PrivateCluster:
    """initdb + pg_ctl in ``root`` (a new temporary directory by default)."""

    def __init__(self, root: str | os.PathLike[str] | None = None, run_as: str = "nobody",
                 settings: dict[str, str] | None = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="gthub-pg-") if root is None else root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.data = self.root / "data"
        self.run_as = run_as if os.geteuid() == 0 else None
        self.bindir = pg_bindir()
        self.settings = {"listen_addresses": "''", "unix_socket_directories": f"'{self.root}'",
                         "max_connections": "100", "shared_buffers": "128MB",
                         "log_min_messages": "warning", **(settings or {})}

    @property
    def dsn(self) -> str:
        return f"host={self.root} dbname=postgres user={SUPERUSER}"

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        if self.run_as is not None:
            cmd = ["runuser", "-u", self.run_as, "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True, cwd="/")

    def _chown(self) -> None:
        if self.run_as is not None:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.root, pw.pw_uid, pw.pw_gid)
        self.root.chmod(0o700)

    def init(self) -> PrivateCluster:
        self._chown()
        if not (self.data / "PG_VERSION").exists():
            self._run("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                      "--encoding=UTF8", "--locale=C")
            with open(self.data / "postgresql.conf", "a") as conf:
                for k, v in self.settings.items():
                    conf.write(f"{k} = {v}\n")
        return self

    def start(self) -> PrivateCluster:
        self.init()
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60",
                  "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-m", "fast",
                  "-w", "-t", "60", "restart")

    def remove(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PrivateCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.remove()
