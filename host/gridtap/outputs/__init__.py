"""Where the data goes: every output is a class registered here under its gridtap.toml section.

An output is built from its own section, started and stopped by the daemon,
and receives every counter and gauge the board session accepts:

    class MyOutput:
        section = "myoutput"     # its [myoutput] table in gridtap.toml
        live = False             # True: wants values as they arrive (the board is read promptly)
        spooled = False          # True: a destination of the durable spool (ctx.spool; the board is
                                 # ACKed only once the spool holds the counter)

        @classmethod
        def parse(cls, section: config.Section) -> Any: ...      # settings; errors name key and line
        def __init__(self, settings: Any, ctx: OutputContext): ...
        def start(self) -> None: ...
        def stop(self) -> None: ...
        def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None: ...
        def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None: ...

Adding an output is one module and one line in `REGISTRY`; neither config.py
nor daemon.py names any output. A module is imported only when its section
is configured, so a daemon without [mqtt] never loads paho.

The REST API (outputs/restapi.py) is the one output that is on without a
section of its own (its keys are [daemon] api/bind/port, as they always were);
it reads the stores through its read-only view (restapi.StoreView) instead of receiving values.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from gridtap.config import Config, Section

# section -> "module:Class"
REGISTRY: dict[str, str] = {
    "mqtt": "gridtap.outputs.mqtt:MqttOutput",
    "flukso": "gridtap.outputs.flukso:FluksoOutput",
    "pvoutput": "gridtap.outputs.pvoutput.output:PVOutputOutput",
    "iec104": "gridtap.outputs.iec104.output:Iec104Output",
    "inverter": "gridtap.control.service:InverterOutput",  # after mqtt: its HA entities use [mqtt]
    "ev": "gridtap.control.ev.service:EvService",   # reads the grid meter and acts on wallboxes
}


@dataclass(frozen=True)
class OutputContext:
    """What the daemon hands every output: the whole config and, to spooled ones, the durable spool."""

    cfg: Config
    spool: Any = None  # gridtap.store.spool.Spool, or None for an output that is not spooled
    clock: Callable[[], float] = time.time  # the daemon's Unix time (a simulated one under --clock-file)
    diagnostics: tuple[str, ...] = ()  # the names of the daemon's diagnostic counters; an output with a
    # diagnostics(values: dict[str, int]) method is given their values (at most once a minute)
    health: Any = None  # gridtap.store.faults.StorageHealth: where spooled outputs report spool faults
    peers: Mapping[str, Any] = field(default_factory=dict)  # the outputs built before this one, by section
    # (REGISTRY order): [inverter] publishes its Home Assistant entities on [mqtt]'s connection
    virtual: Any = None  # gridtap.inputs.virtual.VirtualInbox: where an output that measures sensors of
    # its own (a classmethod virtual_sensors(settings) -> [SensorConfig]) puts their values


class Output(Protocol):
    section: ClassVar[str]
    live: ClassVar[bool]
    spooled: ClassVar[bool]

    @classmethod
    def parse(cls, section: Section) -> Any: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def counter(self, sensor: str, role: str, t: int, total_milli: int) -> None: ...

    def gauge(self, sensor: str, role: str, t: int, value: float, unit: str) -> None: ...


def load(section: str) -> Any:
    """The output class registered for `section` (ImportError when its module or extra is missing)."""
    module, _, name = REGISTRY[section].partition(":")
    return getattr(importlib.import_module(module), name)


def build(section: str, settings: Any, ctx: OutputContext) -> Output:
    out: Output = load(section)(settings, ctx)
    return out
