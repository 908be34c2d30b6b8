"""Users, web sessions, devices claimed with their key, sharing and subscriptions."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets

import psycopg

from gridtap.errors import UserError
from gridtap.fluksoapi import HEX32, is_sensor_id

NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
SESSION_DAYS = 14
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    h = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${h.hex()}"


def password_ok(password: str, stored: str) -> bool:
    try:
        kind, salt, want = stored.split("$")
    except ValueError:
        return False
    if kind != "scrypt":
        return False
    got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), **_SCRYPT)
    return hmac.compare_digest(got.hex(), want)


def add_user(conn: psycopg.Connection, name: str, password: str, size_band: int = 2,
             has_pv: bool = False, shares: bool = False) -> int:
    if not NAME.fullmatch(name):
        raise UserError(f"user name {name!r}: 1-32 letters, digits, '_', '.' or '-'")
    if len(password) < 8:
        raise UserError("password: at least 8 characters")
    if not 1 <= size_band <= 5:
        raise UserError(f"size band {size_band}: household members 1 to 5 (5 = five or more)")
    try:
        row = conn.execute(
            "INSERT INTO hub_user (name, pwhash, token, size_band, has_pv, shares) "
            "VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (name, hash_password(password), secrets.token_hex(16), size_band, has_pv, shares)).fetchone()
    except psycopg.errors.UniqueViolation:
        raise UserError(f"user {name!r} exists already") from None
    assert row is not None
    return int(row[0])


def user_id(conn: psycopg.Connection, name: str) -> int:
    row = conn.execute("SELECT id FROM hub_user WHERE name = %s", (name,)).fetchone()
    if row is None:
        raise UserError(f"no user {name!r}")
    return int(row[0])


def login(conn: psycopg.Connection, name: str, password: str) -> str | None:
    """A new session token for a correct name and password, else None."""
    row = conn.execute("SELECT id, pwhash FROM hub_user WHERE name = %s", (name,)).fetchone()
    if row is None:
        password_ok(password, hash_password("timing"))  # same work for an unknown name
        return None
    if not password_ok(password, row[1]):
        return None
    token = secrets.token_hex(32)
    conn.execute("INSERT INTO web_session (token, user_id, expires) "
                 "VALUES (%s, %s, now() + make_interval(days => %s))", (token, row[0], SESSION_DAYS))
    return token


def session_user(conn: psycopg.Connection, token: str) -> tuple[int, str] | None:
    if not re.fullmatch(r"[0-9a-f]{64}", token):
        return None
    row = conn.execute("SELECT u.id, u.name FROM web_session s JOIN hub_user u ON u.id = s.user_id "
                       "WHERE s.token = %s AND s.expires > now()", (token,)).fetchone()
    return (int(row[0]), str(row[1])) if row else None


def logout(conn: psycopg.Connection, token: str) -> None:
    conn.execute("DELETE FROM web_session WHERE token = %s", (token,))


def token_user(conn: psycopg.Connection, token: str) -> int | None:
    """The user whose read-API token this is (32 hex digits), else None."""
    if not HEX32.fullmatch(token):
        return None
    row = conn.execute("SELECT id FROM hub_user WHERE token = %s", (token,)).fetchone()
    return int(row[0]) if row else None


def claim(conn: psycopg.Connection, uid: int | None, device: str, key: str,
          sensors: list[tuple[str, str]]) -> None:
    """Register ``device`` with its key and sensors, owned by ``uid`` (None: provisioned, unowned).

    A device already known must be claimed with the same key and must not
    belong to someone else; its sensors are added. A sensor already on
    another device is refused.
    """
    device, key = device.lower(), key.lower()
    if not HEX32.fullmatch(device) or not HEX32.fullmatch(key):
        raise UserError("device id and device key: 32 hex digits each")
    for sensor, function in sensors:
        if not is_sensor_id(sensor):
            raise UserError(f"sensor id {sensor!r}: 32 lowercase hex digits")
        if not re.fullmatch(r"[a-z0-9_-]{1,16}", function):
            raise UserError(f"sensor function {function!r}: e.g. main, solar, gas, water")
    with conn.transaction():
        row = conn.execute("SELECT key, owner FROM device WHERE id = %s FOR UPDATE", (device,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO device (id, key, owner) VALUES (%s, %s, %s)", (device, key, uid))
        else:
            if not hmac.compare_digest(row[0], key):
                raise UserError(f"device {device}: wrong device key")
            if row[1] is not None and uid is not None and row[1] != uid:
                raise UserError(f"device {device} is claimed by another user")
            if uid is not None:
                conn.execute("UPDATE device SET owner = %s WHERE id = %s", (uid, device))
        for sensor, function in sensors:
            other = conn.execute("SELECT device FROM sensor WHERE id = %s", (sensor,)).fetchone()
            if other is not None and other[0] != device:
                raise UserError(f"sensor {sensor} belongs to another device")
            conn.execute("INSERT INTO sensor (id, device, function) VALUES (%s, %s, %s) "
                         "ON CONFLICT (id) DO UPDATE SET function = excluded.function",
                         (sensor, device, function))


def set_sharing(conn: psycopg.Connection, uid: int, shares: bool) -> None:
    conn.execute("UPDATE hub_user SET shares = %s WHERE id = %s", (shares, uid))
    if not shares:  # who subscribed sees nothing more; drop the subscriptions too
        conn.execute("DELETE FROM subscription WHERE peer = %s", (uid,))


def subscribe(conn: psycopg.Connection, uid: int, peer_name: str) -> None:
    row = conn.execute("SELECT id FROM hub_user WHERE name = %s AND shares AND id <> %s",
                       (peer_name, uid)).fetchone()
    if row is None:
        raise UserError(f"{peer_name!r} does not share their streams")
    conn.execute("INSERT INTO subscription (user_id, peer) VALUES (%s, %s) ON CONFLICT DO NOTHING",
                 (uid, row[0]))


def unsubscribe(conn: psycopg.Connection, uid: int, peer_name: str) -> None:
    conn.execute("DELETE FROM subscription s USING hub_user u WHERE s.user_id = %s AND s.peer = u.id "
                 "AND u.name = %s", (uid, peer_name))
