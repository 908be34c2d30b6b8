"""mosquitto configurations: the hub's broker, and the bridge a home's broker runs to it.

The bridge logs in to the hub as its device (user name = device id, password
= device key, as an FLM02 bridged to api.flukso.net) and forwards only its
counter topics, out, at QoS 1, with a persistent session (``cleansession
false``): what the hub has not acknowledged stays queued in the home's broker
across outages and restarts of either side. The hub's ACL lets a device
publish under its own id only, so a home cannot write another's sensors.
"""

from __future__ import annotations

from pathlib import Path

from gridtap_hub.mqtt_ingest import PREFIX, RECEIVE_MAXIMUM


def hub_conf(port: int, data_dir: Path, password_file: Path | None = None, host: str = "127.0.0.1",
             user: str | None = None) -> str:
    """The hub's mosquitto.conf: persistent, a deep queue per session, devices confined by ACL.

    Without a password file the broker takes anonymous clients (tests on loopback only).
    """
    acl = data_dir / "acl"
    acl.write_text(f"pattern write {PREFIX}/%u/sensor/+/counter\n"
                   f"user gridtap-hub\ntopic read {PREFIX}/#\n" if password_file else
                   f"topic readwrite {PREFIX}/#\n")
    lines = [f"listener {port} {host}", "persistence true", f"persistence_location {data_dir}/",
             "autosave_interval 10", f"max_inflight_messages {RECEIVE_MAXIMUM}",
             "max_queued_messages 1000000", "log_dest stderr", "log_type error", "log_type warning",
             f"acl_file {acl}"]
    if user is not None:  # started as root, mosquitto switches to this user ('mosquitto' by default)
        lines.append(f"user {user}")
    if password_file is not None:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    else:
        lines += ["allow_anonymous true"]
    return "\n".join(lines) + "\n"


def home_bridge_conf(local_port: int, hub_host: str, hub_port: int, device: str, key: str | None,
                     data_dir: Path, user: str | None = None, restart: tuple[int, int] = (10, 30)) -> str:
    """A home's mosquitto.conf with the bridge to the hub (counters out at QoS 1, persistent session).

    MQTT 3.1.1 on the bridge: mosquitto 2.0.11's v5 bridge lost the messages it had queued
    across a restart of the hub's broker in the fault run; 3.1.1 with ``cleansession false``
    keeps them. It reconnects 10-30 s after losing the hub, later than the ingesters (see
    mqtt_ingest.MqttIngester).
    """
    lines = [f"listener {local_port} 127.0.0.1", "allow_anonymous true", "persistence true",
             f"persistence_location {data_dir}/", "autosave_interval 10", "max_queued_messages 1000000",
             "log_dest stderr", "log_type error", *([f"user {user}"] if user else []),
             "", f"connection gridtap-hub-{device[:12]}", f"address {hub_host}:{hub_port}",
             "bridge_protocol_version mqttv311", "cleansession false", f"remote_clientid bridge-{device}",
             f"restart_timeout {restart[0]} {restart[1]}", "try_private false", "start_type automatic",
             f"topic sensor/+/counter out 1 / {PREFIX}/{device}/"]
    if key is not None:
        lines += [f"remote_username {device}", f"remote_password {key}"]
    return "\n".join(lines) + "\n"
