"""`gridtap hub …`: offered by the gridtap CLI only when the [hub] extra is installed.

gridtap.cli hands the arguments after ``hub`` to ``parse``; this module only builds the
parser, each command imports what it needs when run.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from gridtap.errors import UserError

PASSWORD_ENV = "GRIDTAP_HUB_PASSWORD"


def parse(argv: list[str]) -> Callable[[], int]:
    """Parse ``gridtap hub`` arguments; returns the command to run (argparse exits on bad ones)."""
    args = build_parser().parse_args(argv)
    return lambda: int(args.func(args) or 0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gridtap hub",
                                description="The community hub (docs/hub.md). The PostgreSQL connection "
                                            "comes from --dsn or $GRIDTAP_HUB_DSN.")
    hs = p.add_subparsers(dest="hub_command", metavar="HUBCOMMAND", required=True)

    def dsn(q: argparse.ArgumentParser) -> None:
        q.add_argument("--dsn", help="libpq connection string (default $GRIDTAP_HUB_DSN)")

    q = hs.add_parser("init", help="create the tables and partitions (idempotent)")
    dsn(q)
    q.set_defaults(func=_init)

    q = hs.add_parser("serve", help="serve the Flukso API, the read API and the dashboard")
    dsn(q)
    q.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    q.add_argument("--port", type=int, default=8090)
    q.add_argument("--tz", default="UTC", help="time zone of the dashboard and the night interval")
    q.add_argument("--workers", type=int, default=1,
                   help="processes serving the port together (SO_REUSEPORT); one per core")
    q.set_defaults(func=_serve)

    q = hs.add_parser("user", help="add a user (password from a file or $GRIDTAP_HUB_PASSWORD)")
    dsn(q)
    q.add_argument("name")
    q.add_argument("--password-file", type=Path)
    q.add_argument("--size-band", type=int, default=2, help="household members, 1-5 (5 = five or more)")
    q.add_argument("--pv", action="store_true", help="the home has PV")
    q.add_argument("--share", action="store_true", help="share the home's stream with other users")
    q.set_defaults(func=_user)

    q = hs.add_parser("claim", help="register a device with its key and sensors, for a user or unowned")
    dsn(q)
    q.add_argument("--user", help="owner (omit to provision the device for a later claim)")
    q.add_argument("--device", required=True, help="device id, 32 hex digits")
    q.add_argument("--key-file", type=Path, help="device key file (default $GRIDTAP_FLUKSO_KEY)")
    q.add_argument("--sensor", action="append", default=[], metavar="ID[:FUNCTION]", required=True,
                   help="sensor id; function main (the home's use), solar, gas, water, … (default: "
                        "main for the first, other for the rest)")
    q.set_defaults(func=_claim)

    q = hs.add_parser("mqtt", help="take counters from the hub's broker (MQTT v5 shared subscription)")
    dsn(q)
    q.add_argument("--broker", default="127.0.0.1:1883", help="host:port of the hub's mosquitto")
    q.add_argument("--client-id", default="gridtap-hub-ingest-1",
                   help="stable per ingester: its session (unacknowledged messages) survives restarts")
    q.add_argument("--group", default="hub", help="shared subscription group")
    q.set_defaults(func=_mqtt)

    q = hs.add_parser("pg", help="run a private PostgreSQL in a directory until Ctrl-C, for trying the hub")
    q.add_argument("dir", type=Path)
    q.set_defaults(func=_pg)
    return p


def _connect(args: argparse.Namespace):  # noqa: ANN202 - psycopg imported lazily
    from gridtap_hub import db
    return db.connect(db.dsn_from(args.dsn))


def _init(args: argparse.Namespace) -> int:
    import time

    from gridtap_hub import schema
    with _connect(args) as conn:
        schema.create(conn, time.time())
    print("hub: schema ready")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import time

    from gridtap_hub import db, schema
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dsn_ = db.dsn_from(args.dsn)
    if not 1 <= args.workers <= 64:
        raise UserError(f"--workers {args.workers}: 1 to 64")
    with db.connect(dsn_) as conn:
        schema.create(conn, time.time())
    children = []
    for _ in range(args.workers - 1):  # forked before any thread or connection exists
        pid = os.fork()
        if pid == 0:
            os._exit(_serve_one(dsn_, args))
        children.append(pid)

    def stop_children(*_: object) -> None:
        for pid in children:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    try:
        return _serve_one(dsn_, args, on_term=stop_children)
    finally:
        stop_children()
        for pid in children:
            os.waitpid(pid, 0)


def _serve_one(dsn: str, args: argparse.Namespace, on_term: object = None) -> int:
    from gridtap_hub.server import HubServer
    hub = HubServer(dsn, args.host, args.port, tz=args.tz)

    def term(*_: object) -> None:
        if callable(on_term):
            on_term()
        hub.request_shutdown()
    signal.signal(signal.SIGTERM, term)
    print(f"hub: serving on {hub.url} (pid {os.getpid()})", flush=True)
    hub.serve_forever()
    return 0


def _password(path: Path | None) -> str:
    if path is not None:
        try:
            return path.read_text().splitlines()[0]
        except (OSError, IndexError) as exc:
            raise UserError(f"cannot read the password file {path}: {exc}") from None
    pw = os.environ.get(PASSWORD_ENV, "")
    if not pw:
        raise UserError(f"no password: give --password-file or set {PASSWORD_ENV}")
    return pw


def _user(args: argparse.Namespace) -> int:
    from gridtap_hub import accounts
    with _connect(args) as conn:
        uid = accounts.add_user(conn, args.name, _password(args.password_file), args.size_band, args.pv,
                                args.share)
        token = conn.execute("SELECT token FROM hub_user WHERE id = %s", (uid,)).fetchone()[0]
    print(f"hub: user {args.name} added; read-API token {token}")
    return 0


def _claim(args: argparse.Namespace) -> int:
    from gridtap.outputs.flukso import load_device_key
    from gridtap_hub import accounts
    key = load_device_key(args.key_file).reveal().decode()
    sensors = []
    for i, s in enumerate(args.sensor):
        sid, _, fn = s.partition(":")
        sensors.append((sid.lower(), fn or ("main" if i == 0 else "other")))
    with _connect(args) as conn:
        uid = accounts.user_id(conn, args.user) if args.user else None
        accounts.claim(conn, uid, args.device, key, sensors)
    print(f"hub: device {args.device.lower()} with {len(sensors)} sensors "
          f"{'claimed by ' + args.user if args.user else 'provisioned'}")
    return 0


def _mqtt(args: argparse.Namespace) -> int:
    from gridtap_hub import db
    from gridtap_hub.mqtt_ingest import MqttIngester
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, _, port = args.broker.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--broker {args.broker!r}: host:port")
    ing = MqttIngester(db.dsn_from(args.dsn), host, int(port), client_id=args.client_id, group=args.group)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ing.start()
    print(f"hub: ingesting from mqtt://{args.broker} as {args.client_id}", flush=True)
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    ing.stop()
    return 0


def _pg(args: argparse.Namespace) -> int:
    from gridtap_hub.cluster import PrivateCluster
    args.dir.mkdir(parents=True, exist_ok=True)
    cl = PrivateCluster(args.dir.resolve()).start()
    print(f"hub: PostgreSQL running; export GRIDTAP_HUB_DSN='{cl.dsn}'  (Ctrl-C stops it)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        stop.wait()
    except KeyboardInterrupt:
        pass
    cl.stop()
    print("hub: PostgreSQL stopped", file=sys.stderr)
    return 0
