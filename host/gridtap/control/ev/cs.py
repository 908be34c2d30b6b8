"""The OCPP 1.6J central system: wallboxes connect here, report, and are told their current.

Imported only when [ev] is configured: it needs the `ocpp` and `websockets`
packages (install extra ``[ev]``).

In: BootNotification, Heartbeat, StatusNotification, Authorize,
StartTransaction, StopTransaction, MeterValues. Out: SetChargingProfile
(TxDefaultProfile at boot, TxProfile per grant) and RemoteStart/StopTransaction.

Safe state: at boot every charge point gets a TxDefaultProfile of the safe
current (its share of the connection at the minimum, or 0 A). Each grant is
a TxProfile with a *lease* (``duration``): if gridtap stops refreshing it
(link lost, daemon gone), the profile expires and the charge point falls back
to the safe TxDefaultProfile by itself.
"""

from __future__ import annotations

import base64
import datetime as dt
import hmac
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from ocpp.exceptions import GenericError, OCPPError, ProtocolError
from ocpp.messages import unpack
from ocpp.routing import after, on
from ocpp.v16 import ChargePoint as _ChargePoint
from ocpp.v16 import call, call_result
from ocpp.v16.datatypes import ChargingProfile, ChargingSchedule, ChargingSchedulePeriod, IdTagInfo
from ocpp.v16.enums import (
    Action,
    AuthorizationStatus,
    ChargingProfileKindType,
    ChargingProfilePurposeType,
    ChargingRateUnitType,
    RegistrationStatus,
)
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from gridtap.control.ev.config import MAX_POWER_W, EvConfig
from gridtap.control.ev.controller import BoxMeasure, BoxPlan, Controller
from gridtap.control.ev.loadmgr import BoxSpec, Grant
from gridtap.rules.cfos import date_env

log = logging.getLogger("gridtap.ev")
# The ocpp package logs every frame at INFO and a whole traceback for each bad one: a hostile
# charge point could fill the log. Its frames go to this logger, quiet unless asked for
# (raise it to DEBUG to see the wire); bad frames are counted and logged once each below.
wire = logging.getLogger("gridtap.ev.wire")
wire.setLevel(logging.CRITICAL)

HEARTBEAT_S = 60
MAX_CURRENT_A = 100.0       # plausibility limit for MeterValues (power: config.MAX_POWER_W)
_STATE = {"Available": 0, "Preparing": 1, "Charging": 2, "SuspendedEV": 3, "SuspendedEVSE": 3,
          "Finishing": 1, "Reserved": 0, "Unavailable": 9, "Faulted": 9}


@dataclass
class Box:
    """The central system's view of one configured wallbox."""

    measure: BoxMeasure = field(default_factory=BoxMeasure)
    cp: Any = None                       # the connected _Link, if any
    booted: bool = False
    status: str = "Unavailable"
    txn: int | None = None
    sent: tuple[float, int] | None = None  # (amps, phases) of the last accepted TxProfile
    sent_at: float = -math.inf
    sent_lease: float = 0.0              # the lease that profile was sent with
    bad_values: int = 0
    boot: int = 0                        # when it last booted: its meter register's epoch
    metered: bool = False                # its energy register is known (MeterValues or meterStart)


class CentralSystem:
    """Holds every wallbox's state; serves OCPP; runs the control loop."""

    def __init__(self, cfg: EvConfig, grid: Callable[[], tuple[float, tuple[float, float, float]] | None],
                 limits: Callable[[], Any] | None = None, clock: Callable[[], float] = time.time,
                 on_measure: Callable[[str, Box], None] | None = None) -> None:
        self.cfg = cfg
        self.grid = grid
        self.clock = clock
        self.on_measure = on_measure  # each wallbox's new measurement, e.g. to its virtual sensor
        self.boxes = {w.id: Box() for w in cfg.wallboxes}
        plans = [BoxPlan(w.id, w.index, w.rule, BoxSpec(w.id, w.min_a, w.max_a, w.phases, w.switch_phases),
                         w.target_wh, w.departure_min) for w in cfg.wallboxes]
        self.controller = Controller(plans, cfg.max_total_current_a, min_on_s=cfg.min_on_s,
                                     min_off_s=cfg.min_off_s, hysteresis_a=cfg.hysteresis_a,
                                     reserve_a=cfg.reserve_a, limits=limits, log=log.warning)
        self.errors: dict[str, int] = {}
        self.lease_s = max(60, int(cfg.interval_s * 6))
        self._txn = int(clock()) % 1_000_000
        self._server: Server | None = None

    # ---- the server ---------------------------------------------------------------------------

    async def start(self) -> int:
        """Listen; returns the bound port (useful with port 0 in tests)."""
        self._server = await serve(self._handler, self.cfg.bind, self.cfg.port,
                                   subprotocols=[Subprotocol("ocpp1.6")],
                                   process_request=self._admit, max_size=65536, ping_interval=None,
                                   close_timeout=2)
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _admit(self, conn: ServerConnection, request: Request) -> Response | None:
        ident = request.path.rstrip("/").rsplit("/", 1)[-1]
        if ident not in self.boxes:
            self.count("unknown charge point")
            log.warning("refused charge point %r: not in [[ev.wallbox]]", ident[:60])
            return conn.respond(HTTPStatus.NOT_FOUND, "unknown charge point\n")
        if self.cfg.password is not None and not self._authorized(ident, request.headers):
            self.count("bad password")
            log.warning("refused charge point %r: wrong or missing basic auth", ident)
            r = conn.respond(HTTPStatus.UNAUTHORIZED, "authorization required\n")
            r.headers["WWW-Authenticate"] = 'Basic realm="gridtap"'
            return r
        return None

    def _authorized(self, ident: str, headers: Headers) -> bool:
        value = headers.get("Authorization", "")
        if not value.startswith("Basic "):
            return False
        try:
            user, _, pw = base64.b64decode(value[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        assert self.cfg.password is not None
        return hmac.compare_digest(user.encode(), ident.encode()) & hmac.compare_digest(
            pw.encode(), self.cfg.password.encode())

    async def _handler(self, conn: ServerConnection) -> None:
        ident = conn.request.path.rstrip("/").rsplit("/", 1)[-1] if conn.request else ""
        if conn.subprotocol != "ocpp1.6":
            self.count("no ocpp1.6 subprotocol")
            await conn.close(1002, "subprotocol ocpp1.6 required")
            return
        box = self.boxes[ident]
        if box.cp is not None:
            log.warning("%s connected again; the old link is dropped", ident)
            await box.cp._connection.close()
        link = _Link(ident, conn, self)
        box.cp, box.booted, box.sent = link, False, None
        try:
            await link.start()
        except Exception as exc:  # noqa: BLE001 - a link ending in any way only ends that link
            log.info("%s: link closed (%s)", ident, type(exc).__name__)
        finally:
            if box.cp is link:
                box.cp = None
                box.measure.connected = False

    def count(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def measured(self, ident: str) -> None:
        if self.on_measure is not None:
            self.on_measure(ident, self.boxes[ident])

    # ---- values -------------------------------------------------------------------------------

    def fields(self) -> dict[str, float]:
        """Every wallbox's E<n>.* values (sensors, REST, rules of other sections)."""
        now = dt.datetime.fromtimestamp(self.clock())
        grid = self.grid()
        gw, ga = grid if grid is not None else (0.0, (0.0, 0.0, 0.0))
        env = self.controller.variables(now.hour * 60 + now.minute, now.isoweekday() % 7, gw, ga,
                                        {k: b.measure for k, b in self.boxes.items()},
                                        date_env(now.timestamp(), None))
        return {k: v for k, v in env.items() if k.startswith("E")}

    # ---- control ------------------------------------------------------------------------------

    async def control_step(self) -> dict[str, Grant]:
        t = self.clock()
        now = dt.datetime.fromtimestamp(t)
        grid = self.grid()
        # a booted wallbox with no transaction may start one and draw its safe default before the
        # next step: that much stays free (3 x 6 A would else go over a limit the others filled)
        idle = sum(1 for b in self.boxes.values() if b.cp is not None and b.booted and b.txn is None)
        grants = self.controller.step(t, now.hour * 60 + now.minute, now.isoweekday() % 7,
                                      grid[0] if grid else None, grid[1] if grid else None,
                                      {k: b.measure for k, b in self.boxes.items()},
                                      standby_a=idle * self.safe_amps(), date=date_env(t, None))
        # decreases go out before increases, so the connection is never over its limit in between
        order = sorted(grants.items(), key=lambda kv: kv[1].amps - (self.boxes[kv[0]].sent or (0, 0))[0])
        for ident, g in order:
            try:
                await self._apply(ident, g, t)
            except Exception as exc:  # noqa: BLE001 - one lost link must not hold back the others' decreases
                self.count("profile not delivered")
                log.warning("%s: the charging profile could not be sent (%s)", ident, type(exc).__name__)
        return grants

    async def _apply(self, ident: str, g: Grant, t: float) -> None:
        box = self.boxes[ident]
        if box.cp is None or not box.booted or box.txn is None:
            return
        want = (g.amps, g.phases)
        if box.sent == want and t - box.sent_at < box.sent_lease / 2:
            return      # idempotent: the same profile, still well within the lease it was sent with
        ok = await box.cp.set_profile(ChargingProfilePurposeType.tx_profile, g.amps, g.phases,
                                      box.txn, self.lease_s)
        if ok:
            box.sent, box.sent_at, box.sent_lease = want, t, self.lease_s
            log.info("%s: %.1f A on %d phase(s) (%s)", ident, g.amps, g.phases, g.reason)
        else:
            self.count("profile rejected")
            log.warning("%s: rejected the charging profile %.1f A", ident, g.amps)

    def safe_amps(self) -> float:
        """The TxDefaultProfile current: the minimum if all wallboxes at it fit beside the reserve, else 0."""
        worst = sum(w.min_a for w in self.cfg.wallboxes) + self.cfg.reserve_a
        return min(w.min_a for w in self.cfg.wallboxes) if worst <= self.cfg.max_total_current_a else 0.0

    async def remote_start(self, ident: str, id_tag: str = "gridtap") -> bool:
        box = self.boxes[ident]
        if box.cp is None:
            return False
        r = await box.cp.call(call.RemoteStartTransaction(id_tag=id_tag, connector_id=1))
        return bool(r.status == "Accepted")

    async def remote_stop(self, ident: str) -> bool:
        box = self.boxes[ident]
        if box.cp is None or box.txn is None:
            return False
        r = await box.cp.call(call.RemoteStopTransaction(transaction_id=box.txn))
        return bool(r.status == "Accepted")

    def next_txn(self) -> int:
        self._txn = self._txn % 2_000_000_000 + 1
        return self._txn


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat().replace("+00:00", "Z")


class _Link(_ChargePoint):  # type: ignore[misc]
    """One connected charge point (the ocpp package's central-system side)."""

    def __init__(self, ident: str, conn: ServerConnection, cs: CentralSystem) -> None:
        super().__init__(ident, conn, response_timeout=10, logger=wire)
        self.cs = cs
        self.box = cs.boxes[ident]

    async def route_message(self, raw_msg: str) -> None:
        """As the library's, but a malformed message gets a CALLERROR instead of silence."""
        try:
            unpack(raw_msg)
        except OCPPError as exc:
            self.cs.count("malformed message")
            log.warning("%s: malformed OCPP message (%s)", self.id, exc.description)
            uid = _unique_id(raw_msg)
            await self._send(json.dumps([4, uid, "FormationViolation", str(exc.description)[:200], {}]))
            return
        await super().route_message(raw_msg)

    async def _handle_call(self, msg: Any) -> Any:
        try:
            return await super()._handle_call(msg)
        except OCPPError as exc:
            if not isinstance(exc, GenericError):
                self.cs.count("invalid message")
            log.warning("%s: %s refused: %s (%s)", self.id, str(msg.action)[:40], type(exc).__name__,
                        str(exc.description)[:200])
            raise

    def _need_boot(self) -> None:
        if not self.box.booted:
            self.cs.count("message before BootNotification")
            raise GenericError(description="send BootNotification first")

    @on(Action.boot_notification)
    def on_boot(self, charge_point_vendor: str, charge_point_model: str, **_: Any) -> Any:
        return call_result.BootNotification(current_time=_iso(self.cs.clock()), interval=HEARTBEAT_S,
                                            status=RegistrationStatus.accepted)

    @after(Action.boot_notification)
    async def after_boot(self, charge_point_vendor: str, charge_point_model: str, **_: Any) -> None:
        log.info("%s: booted (%s %s)", self.id, charge_point_vendor[:20], charge_point_model[:20])
        self.box.booted = True
        self.box.boot = int(self.cs.clock())
        wb = self.cs.cfg.wallbox(self.id)
        ok = await self.set_profile(ChargingProfilePurposeType.tx_default_profile, self.cs.safe_amps(),
                                    wb.phases if wb else 3, None, None)
        if not ok:
            self.cs.count("safe default profile rejected")
            log.warning("%s: rejected the safe TxDefaultProfile", self.id)

    @on(Action.heartbeat)
    def on_heartbeat(self) -> Any:
        return call_result.Heartbeat(current_time=_iso(self.cs.clock()))

    @on(Action.status_notification)
    def on_status(self, connector_id: int, error_code: str, status: str, **_: Any) -> Any:
        self._need_boot()
        self.box.status = status
        self.box.measure.state = _STATE.get(status, 9)
        return call_result.StatusNotification()

    @on(Action.authorize)
    def on_authorize(self, id_tag: str) -> Any:
        self._need_boot()
        # The charge point itself is allow-listed by id (and password): any tag on it may charge.
        return call_result.Authorize(id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted))

    @on(Action.start_transaction)
    def on_start(self, connector_id: int, id_tag: str, meter_start: int, timestamp: str, **_: Any) -> Any:
        self._need_boot()
        if self.box.txn is not None:
            log.warning("%s: StartTransaction while transaction %d runs; the old one ends", self.id,
                        self.box.txn)
        self.box.txn = self.cs.next_txn()
        m = self.box.measure
        m.connected, m.txn_start_wh = True, float(meter_start)
        m.import_wh = max(m.import_wh, float(meter_start))
        self.box.metered |= meter_start >= 0   # a negative one: the sensor's checks refuse it anyway
        self.box.sent = None
        return call_result.StartTransaction(transaction_id=self.box.txn,
                                            id_tag_info=IdTagInfo(status=AuthorizationStatus.accepted))

    @on(Action.stop_transaction)
    def on_stop(self, meter_stop: int, timestamp: str, transaction_id: int, **_: Any) -> Any:
        self._need_boot()
        if transaction_id != self.box.txn:
            self.cs.count("unknown transaction")
            log.warning("%s: StopTransaction for unknown transaction %d", self.id, transaction_id)
        else:
            self.box.txn = None
            self.box.measure.connected = False
            self.box.measure.power_w = 0.0
            self.box.measure.currents = (0.0, 0.0, 0.0)
            self.cs.measured(self.id)
        return call_result.StopTransaction()

    @on(Action.meter_values)
    def on_meter_values(self, connector_id: int, meter_value: list[dict[str, Any]], **_: Any) -> Any:
        self._need_boot()
        for mv in meter_value[-4:]:
            self._sampled(mv.get("sampled_value", []))
        self.cs.measured(self.id)
        return call_result.MeterValues()

    def _sampled(self, values: list[dict[str, Any]]) -> None:
        m = self.box.measure
        cur = list(m.currents)
        for sv in values[:32]:
            try:
                x = float(sv["value"])
            except (KeyError, ValueError, TypeError):
                self._bad("a sampled value that is not a number")
                continue
            what = sv.get("measurand", "Energy.Active.Import.Register")
            unit = sv.get("unit", "")
            scale = 1000.0 if unit in ("kWh", "kW") else 1.0
            x *= scale
            if not math.isfinite(x) or x < 0:
                self._bad(f"{what} = {sv['value']!r}")
            elif what == "Energy.Active.Import.Register":
                if x < m.import_wh - 1.0:
                    self._bad(f"energy register went back from {m.import_wh:.0f} to {x:.0f} Wh")
                else:
                    m.import_wh = x
                    self.box.metered = True
            elif what == "Power.Active.Import":
                if x > MAX_POWER_W:
                    self._bad(f"power {x:.0f} W")
                else:
                    m.power_w = x
            elif what == "Current.Import":
                phase = {"L1": 0, "L2": 1, "L3": 2}.get(sv.get("phase", "L1"))
                if phase is None or x > MAX_CURRENT_A:
                    self._bad(f"current {x:.1f} A on phase {sv.get('phase')!r}")
                else:
                    cur[phase] = x
        m.currents = (cur[0], cur[1], cur[2])

    def _bad(self, what: str) -> None:
        self.box.bad_values += 1
        self.cs.count("implausible meter value")
        log.warning("%s: implausible MeterValues: %s (ignored)", self.id, what)

    async def set_profile(self, purpose: ChargingProfilePurposeType, amps: float, phases: int,
                          txn: int | None, duration: int | None) -> bool:
        tx = purpose == ChargingProfilePurposeType.tx_profile
        profile = ChargingProfile(
            charging_profile_id=2 if tx else 1, stack_level=1 if tx else 0,
            charging_profile_purpose=purpose,
            charging_profile_kind=(ChargingProfileKindType.relative if tx
                                   else ChargingProfileKindType.absolute),
            transaction_id=txn,
            charging_schedule=ChargingSchedule(
                charging_rate_unit=ChargingRateUnitType.amps, duration=duration,
                start_schedule=None if tx else _iso(self.cs.clock()),
                charging_schedule_period=[ChargingSchedulePeriod(start_period=0, limit=round(amps, 1),
                                                                 number_phases=phases)]))
        try:
            r = await self.call(call.SetChargingProfile(connector_id=1 if tx else 0,
                                                        cs_charging_profiles=profile))
        except (TimeoutError, OCPPError, ProtocolError) as exc:
            log.warning("%s: SetChargingProfile failed (%s)", self.id, type(exc).__name__)
            return False
        return bool(r.status == "Accepted")


def _unique_id(raw: str) -> str:
    try:
        msg = json.loads(raw)
    except (ValueError, RecursionError):
        return "-1"
    if isinstance(msg, list) and len(msg) > 1 and isinstance(msg[1], str):
        return msg[1][:36]
    return "-1"
