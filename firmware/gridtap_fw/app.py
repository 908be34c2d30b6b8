# The board application: glue between the HAL and the one-concern modules.
#
#   App(hal).step()   one ADC block, the brownout check, pulses, the link,
#                     tuples and gauges, persistence housekeeping
#   App(hal).run()    step() forever (firmware/main.py on the board)
#
# The HAL contract is in docs/architecture.md; the core never imports machine.
# Time: ticks_us() is only used through differences (it wraps at 2**30 on
# MicroPython), accumulated into an unbounded uptime in microseconds. Unix
# time = offset set by TIME_SET + uptime; before the first TIME_SET the
# offset is 0 and TIME says synced = 0.
#
# What the board sends, and when:
#   HELLO    at boot and on HELLO_REQ (seq restarts at 0 after a reset)
#   TIME     at boot, after TIME_SET, then every TIME_EVERY_MS
#   GAUGE    once a second per enabled CT, the second just measured
#   COUNTER  per enabled CT and PULSE per enabled input: at most once a second
#            while the value changes, and once a minute when it does not (a
#            heartbeat the host can trust); both are reliable (ring, ACK, RETX)
#   EVENT    boot (restored / fresh / defaults), brownout save, storage
#            errors, mains lost/back, lost ADC blocks; reliable
# A quiet household (3 CTs, 2 meters) costs about 3 GAUGE + 5 tuple frames a
# second, under 3 % of a 115200 baud link.

import gc

import micropython

from gridtap_fw import config, energy, link, persist, power, pulses, savepolicy, wire

FW_VERSION = (0, 1, 0)
BLOCK_SETS = 256  # the largest block the HAL may return (buf size), 53 ms
TIME_EVERY_MS = 10000
SLOW_MS = 200  # tuples, resends, TIME and save checks run this often
TUPLE_MIN_MS = 1000  # a changing register is sent at most once a second
TUPLE_HEARTBEAT_MS = 60000  # and an unchanged one once a minute
PULSE_KEY = 256
# MicroPython collects garbage when an allocation finds the heap full, which may
# be in the block that closes a second, the longest one: together they would
# outlast the DMA's slack on a Pico (hardware/qemu-m0.md). So the firmware
# collects in the block after each second closes, a light one, and in the block
# after the slow checks once GC_EVERY_MS have passed since the last collection
# (about three a second): it allocates well under the free heap in a second,
# so the heap never fills in between. A collection sweeps the heap up to the
# highest block allocated since the last one, so its pause grows with the
# garbage made in between (about 90 KB a second, mostly float boxes of the
# period maths), and with the highest block that lives for ever: main.py
# collects every 8 KB while the firmware is imported and the app built, so the
# long-lived objects sit at the bottom of the heap. On a Cortex-M0+ that keeps
# a pause under 4.5 ms, where one collection a second paused 6.8 ms. (Asking
# gc.mem_free() first would cost as much as a collection: it walks the whole
# allocation table.)
GC_EVERY_MS = 300


def ticks_diff(a: int, b: int) -> int:
    """a - b for MicroPython ticks (which wrap at 2**30)."""
    return ((a - b + 0x20000000) & 0x3FFFFFFF) - 0x20000000


class App:
    def __init__(self, hal) -> None:
        gc.collect()  # the imports' and the HAL's garbage, before the long-lived state
        self.hal = hal
        board = hal.board
        chans = board["adc"]["channels"]
        self.nch = len(chans)
        self.n_ct = self.nch - 1
        self.n_pulse = len(board["pulse_inputs"])
        sets_per_s = int(board["adc"]["sets_per_s"])
        # A HAL with its own block size (hal_rp2: 48 sets = 10 ms) gets a buffer of that
        # size; one that fills whatever it is given (hal_virtual) gets BLOCK_SETS.
        block = getattr(hal, "block_sets", BLOCK_SETS)
        self.buf = bytearray(min(block, BLOCK_SETS) * self.nch * 2)
        self.last_ticks = hal.ticks_us()
        self.up_us = 0
        self.offset_ms = 0
        self.synced = 0
        self.link = link.Link(hal)
        self.cfg = config.Config(self.n_ct, self.n_pulse)
        self.store = persist.Store(hal, board, self.n_ct, self.n_pulse, self.cfg.image_len())
        pending = []
        n_ct = self.n_ct
        n_pulse = self.n_pulse
        c = None
        self.persist_ok = True
        for attempt in range(3):
            try:
                cfg_ok = self.store.load_config(self.cfg, lambda: config.Config(n_ct, n_pulse))
                c = self.store.load_counters()
                if not cfg_ok:
                    pending.append((2, wire.EV_CONFIG_DEFAULT, "no intact config image: defaults"))
                break
            except OSError as exc:
                if attempt == 2:
                    # The EEPROM cannot be read: never write over records we could not
                    # see. Counters start at 0 in RAM only; the host sees a new epoch.
                    self.store.armed = False
                    self.persist_ok = False
                    pending.append((4, wire.EV_STORAGE, "eeprom unreadable, persistence off: %s" % exc))
        self.energies = [energy.CtEnergy(sets_per_s) for _ in range(n_ct)]
        self.inputs = [pulses.PulseInput(self.cfg.pulses[i]) for i in range(n_pulse)]
        self.debouncing = True  # some input may have a debouncer pending (step)
        cause = hal.reset_cause()
        if c is None:
            c = persist.Counters(n_ct, n_pulse)
            if self.store.armed:
                pending.append((3, wire.EV_FRESH, "no intact counter record: counters start at 0"))
        else:
            for k in range(n_ct):
                e = self.energies[k]
                e.imp.restore(c.ct[k][0])
                e.exp.restore(c.ct[k][1])
                e.qpos.restore(c.ct[k][2])  # 0 from a layout-1 record (persist.LAYOUT_V1)
                e.qneg.restore(c.ct[k][3])
            for i in range(n_pulse):
                inp = self.inputs[i]
                inp.pulses, inp.base_pulses, inp.base_milli, inp.last_unix_ms = c.pulse[i]
            if c.flags & persist.FLAG_BROWNOUT and cause in (wire.RESET_UNKNOWN, wire.RESET_POWER_ON):
                cause = wire.RESET_BROWNOUT
            pending.append((1, wire.EV_RESTORED, "counters restored, record %d" % self.store.seq))
        self.counters = c
        self.reset_cause = cause
        self.boot_count = (c.boot_count + 1) & 0xFFFFFFFF
        self.brownout_count = c.brownout_count
        self.browned = False
        self.policy = savepolicy.SavePolicy(self.cfg.save_wh, self.cfg.save_min)
        self.power = power.PowerMeter(board, self.cfg, self.energies)
        self.ac = False
        self.ac_seen = False
        self.last_time_ms = 0
        self.next_slow_ms = 0
        self.adc_overruns = getattr(hal, "adc_overruns", 0)
        n_sensors = n_ct + n_pulse
        self.tuple_ms: list = [None] * n_sensors  # when each sensor's tuple was last queued
        self.tuple_val: list = [None] * n_sensors  # and what it said
        # When the CT registers last moved (uptime ms): a second of mains periods is
        # committed at a crossing inside an ADC block, a brownout save commits the second
        # in progress. COUNTERs and GAUGEs carry this instant, not the one they are sent at
        # (up to a second later), so <timestamp, counter> is what the register held then.
        # At boot the restored registers hold what the last save saw: nothing since.
        self.commit_ms = 0
        self.seconds_seen = 0  # PowerMeter.seconds when commit_ms was set
        self.collect_next = False  # the last block closed a second or ran the slow checks: collect now
        self.collected_ms = 0  # uptime ms of the last collection
        self.send_hello()
        for ev in pending:
            self.event(ev[0], ev[1], ev[2])
        try:
            self._save(0)  # the new boot count must survive the next reset
        except OSError as exc:
            self.event(4, wire.EV_STORAGE, "eeprom write failed: %s" % exc)
        self.send_time(0)
        gc.threshold(-1)  # the boot's threshold (main.py), if any: from now on step() collects
        gc.collect()  # the boot's garbage: the blocks start with a clean heap

    # ------------------------------------------------------------ time

    def unix_ms(self, up_ms: int) -> int:
        return max(0, self.offset_ms + up_ms)

    # ------------------------------------------------------------ link out

    def send_hello(self) -> None:
        bid = bytes(self.hal.unique_id())[:8]
        bid = bid + b"\x00" * (8 - len(bid))
        self.link.send(wire.HELLO, (bid, FW_VERSION[0], FW_VERSION[1], FW_VERSION[2], wire.PROTO_VERSION,
                                    self.boot_count, self.reset_cause, self.brownout_count & 0xFFFFFFFF,
                                    self.n_ct, self.n_pulse))

    def send_time(self, now_ms: int) -> None:
        u = self.unix_ms(now_ms)
        self.link.send(wire.TIME, ((u // 1000) & 0xFFFFFFFF, u % 1000, now_ms & 0xFFFFFFFF, self.synced))
        self.last_time_ms = now_ms

    def event(self, level: int, code: int, text: str) -> None:
        now_ms = self.up_us // 1000
        u = self.unix_ms(now_ms)
        data = text.encode()[:wire.EVENT_MAX_TEXT]
        self.link.send_reliable(wire.EVENT, ((u // 1000) & 0xFFFFFFFF, u % 1000, level, code, data), -1,
                                now_ms)

    # The slow checks (_tuples, _maybe, _stamp_pulses, _housekeeping, _values) run five
    # times a second; as native code they cost 0.1 M instructions a second less on the M0.
    @micropython.native
    def _stamp_pulses(self) -> None:
        for inp in self.inputs:
            if inp.last_us is not None:
                inp.last_unix_ms = self.unix_ms(inp.last_us // 1000)

    @micropython.native
    def _tuples(self, now_ms: int) -> None:
        u = self.unix_ms(self.commit_ms)
        for k in range(self.n_ct):
            if self.cfg.cts[k].enabled:
                e = self.energies[k]
                self._maybe(k, (e.imp.mwh, e.exp.mwh), now_ms, wire.COUNTER, e, u)
        self._stamp_pulses()
        for i in range(self.n_pulse):
            if self.cfg.pulses[i].enabled:
                inp = self.inputs[i]
                self._maybe(self.n_ct + i, inp.pulses, now_ms, wire.PULSE, inp, u)

    @micropython.native
    def _maybe(self, slot: int, val, now_ms: int, mtype: int, src, u: int) -> None:
        last = self.tuple_ms[slot]
        if last is not None:
            age = now_ms - last
            if age < TUPLE_MIN_MS or (val == self.tuple_val[slot] and age < TUPLE_HEARTBEAT_MS):
                return
        if mtype == wire.COUNTER:
            values = src.tuple_values(slot, u)
            key = slot
        else:
            values = src.tuple_values(slot - self.n_ct)
            key = PULSE_KEY + slot - self.n_ct
        self.link.send_reliable(mtype, values, key, now_ms)
        self.tuple_ms[slot] = now_ms
        self.tuple_val[slot] = val

    def _gauges(self) -> None:
        u = self.unix_ms(self.commit_ms)
        t = (u // 1000) & 0xFFFFFFFF
        for g in self.power.gauges():
            if self.cfg.cts[g[0]].enabled:
                # the reactive registers ride on every GAUGE: cumulative, so a lost one loses nothing
                qp = self.energies[g[0]].qpos.mwh
                qn = self.energies[g[0]].qneg.mwh
                self.link.send(wire.GAUGE, (g[0], t, u % 1000, g[1], g[2], g[3], g[4], g[5], g[6], g[7],
                                            (qp // 1000) & 0xFFFFFFFF, qp % 1000, (qn // 1000) & 0xFFFFFFFF,
                                            qn % 1000))

    # ------------------------------------------------------------ commands

    def _ack(self, seq: int) -> None:
        self.link.send(wire.ACK, ((seq,),))

    def _nak(self, m, reason: int) -> None:
        self.link.send(wire.NAK, (m.seq, m.mtype, reason))

    def command(self, m, now_ms: int) -> None:
        t = m.mtype
        v = m.values
        if t == wire.HELLO_REQ:
            self.send_hello()
        elif t == wire.TIME_SET:
            self.offset_ms = v[0] * 1000 + v[1] - now_ms
            self.synced = 1
            self._ack(m.seq)
            self.send_time(now_ms)
        elif t == wire.CONFIG_GET:
            items = self.cfg.get(v[0], v[1], v[2])
            if isinstance(items, int):
                self._nak(m, items)
            else:
                self.link.send(wire.CONFIG, (v[0], v[1], items))
        elif t == wire.CONFIG_SET:
            self._config_set(m)
        elif t == wire.COMMIT:
            self._commit(m, now_ms)
        elif t == wire.NAK:
            pass  # the host refused something we sent; nothing to undo
        else:
            self._nak(m, wire.NAK_UNKNOWN_TYPE)

    def _config_set(self, m) -> None:
        target, index, items = m.values
        reason = self.cfg.check(target, index, items)
        if reason:
            self._nak(m, reason)
            return
        if target == wire.TARGET_PULSE:
            for pid, value in items:
                if pid == wire.P_METER_CONST_MILLI:
                    self.inputs[index].set_meter_const(value)  # keeps the total reached so far
        self.cfg.apply(target, index, items)
        self.power.config_changed()
        self.policy.save_wh = self.cfg.save_wh
        self.policy.save_min = self.cfg.save_min
        self._ack(m.seq)

    def _commit(self, m, now_ms: int) -> None:
        if not self.persist_ok:
            self._nak(m, wire.NAK_STORAGE)
            return
        if not self.store.armed:
            self._nak(m, wire.NAK_BUSY)
            return
        what = m.values[0]
        try:
            if what & wire.COMMIT_CONFIG:
                self.store.save_config(self.cfg)
            if what & wire.COMMIT_COUNTERS:
                self._save(now_ms)
        except OSError as exc:
            self.event(4, wire.EV_STORAGE, "eeprom write failed: %s" % exc)
            self._nak(m, wire.NAK_STORAGE)
            return
        self._ack(m.seq)

    # ------------------------------------------------------------ persistence

    def _snapshot(self):
        self._stamp_pulses()
        c = self.counters
        c.flags = 0
        c.boot_count = self.boot_count
        c.brownout_count = self.brownout_count
        for k in range(self.n_ct):
            e = self.energies[k]
            c.ct[k] = [e.imp.mwh, e.exp.mwh, e.qpos.mwh, e.qneg.mwh]
        for i in range(self.n_pulse):
            inp = self.inputs[i]
            c.pulse[i] = [inp.pulses, inp.base_pulses, inp.base_milli, inp.last_unix_ms]
        return c

    @micropython.native
    def _values(self) -> list:
        vals = []
        for e in self.energies:
            vals.append(e.imp.mwh)
            vals.append(e.exp.mwh)
            vals.append(e.qpos.mwh)  # mvarh: save_wh bounds a crash's loss of varh too
            vals.append(e.qneg.mwh)
        for inp in self.inputs:
            vals.append(inp.total_milli())
        return vals

    def _save(self, now_ms: int, spread: bool = False) -> None:
        if self.store.save_counters(self._snapshot(), spread):
            self.policy.saved(now_ms, self._values())

    def _brownout(self) -> None:
        self.browned = True
        self.brownout_count = (self.brownout_count + 1) & 0xFFFFFFFF
        try:
            ok = self.store.brownout_save(self._snapshot())
        except OSError:
            ok = False
        self.event(3, wire.EV_BROWNOUT_SAVE, "brownout save ok" if ok else "brownout save failed")

    @micropython.native
    def _housekeeping(self, now_ms: int) -> None:
        if self.browned or not self.store.armed:
            return
        vals = self._values()
        if self.policy.due(now_ms, vals):
            try:
                self._save(now_ms, True)  # a page per block: Store.pending
            except OSError as exc:
                self.policy.saved(now_ms, vals)  # retry after save_min, not every step
                self.event(4, wire.EV_STORAGE, "eeprom write failed: %s" % exc)

    # ------------------------------------------------------------ main loop

    # Native Thumb code (the same runtime calls, no bytecode dispatch): the port keeps it
    # off the GC heap as a Pico's flash keeps frozen native code (hardware/qemu-m0.md).
    @micropython.native
    def step(self) -> None:
        hal = self.hal
        pm = self.power
        n = hal.adc_block(self.buf)
        # uptime, inlined: a method call costs about 1,000 instructions on a Cortex-M0+
        t = hal.ticks_us()
        d = ((t - self.last_ticks + 0x20000000) & 0x3FFFFFFF) - 0x20000000  # ticks_diff
        if d > 0:
            self.up_us += d
        self.last_ticks = t
        # The supply monitor comes first: the hold-up budget starts when it fires.
        if hal.brownout():
            if not self.browned:
                # The block just read and the second in progress go into the
                # save too, or up to a second of energy would die with the MCU.
                if n > 0:
                    pm.feed(self.buf, n)
                    n = 0
                pm.flush()
                self._brownout()
        elif self.browned:
            self.browned = False
            self.store.armed = self.persist_ok
            self.event(2, wire.EV_SUPPLY_BACK, "supply back without a reset")
        now_ms = self.up_us // 1000
        second = pm.feed(self.buf, n) if n > 0 else False
        if pm.seconds != self.seconds_seen:  # a second closed, or the brownout save's flush
            self.seconds_seen = pm.seconds
            self.commit_ms = max(0, now_ms - pm.after_sets * 1000 // pm.sets_per_s)
        if pm.ac != self.ac:
            self.ac = pm.ac
            if self.ac and self.ac_seen:
                self.event(1, wire.EV_AC_BACK, "mains voltage back")
            elif not self.ac and self.ac_seen:
                self.event(2, wire.EV_AC_LOST, "no mains voltage: 0 W")
            self.ac_seen = True
        for ev in hal.pulse_edges():
            i = ev[0]
            if 0 <= i < self.n_pulse and self.cfg.pulses[i].enabled:
                t = self.up_us + ticks_diff(ev[1], self.last_ticks)
                self.inputs[i].edge(t, ev[2])
                self.debouncing = True
        if self.debouncing:
            # poll() only moves a debouncer that has something pending (a level not yet
            # stable, or an input not re-armed): a call per input per block costs about
            # 1 % of a Cortex-M0+, and only an edge makes one pending, so the inputs are
            # not even looked at until the next edge once none is (hardware/qemu-m0.md)
            busy = False
            for inp in self.inputs:
                if inp.level != inp.stable or not inp.armed:
                    inp.poll(self.up_us)
                    busy = busy or inp.level != inp.stable or not inp.armed
            self.debouncing = busy
        for m in self.link.poll(now_ms):
            self.command(m, now_ms)
        # The block that closed a second is the longest, one that collects garbage the next:
        # neither also writes an EEPROM page (I2C plus a 5 ms write cycle, hal_rp2 waits for
        # it) or runs the slow checks; they wait a block (hardware/qemu-m0.md).
        light = True
        if second:
            self._gauges()
            self.collect_next = True
            light = False
        elif self.collect_next:
            self.collect_next = False
            self.collected_ms = now_ms
            gc.collect()
            light = False
        if self.store.pending is not None and light and not self.browned:
            # the next page of a periodic save begun in an earlier block (Store.pending)
            try:
                self.store.service()
            except OSError as exc:
                self.store.pending = None
                self.event(4, wire.EV_STORAGE, "eeprom write failed: %s" % exc)
        if now_ms >= self.next_slow_ms and light:
            # Bookkeeping that needs no block-by-block attention runs every SLOW_MS,
            # which keeps the per-block cost (100 blocks/s on the rp2) small. A run
            # costs about 125,000 instructions on a Cortex-M0+: every 100 ms that was
            # 1.5 % of the CPU (hardware/qemu-m0.md).
            # on a fixed grid: a run put off by a heavy block does not delay the ones after it
            self.next_slow_ms += SLOW_MS
            if self.next_slow_ms <= now_ms:
                self.next_slow_ms = now_ms + SLOW_MS
            self._tuples(now_ms)
            self.link.service(now_ms)
            if now_ms - self.last_time_ms >= TIME_EVERY_MS:
                self.send_time(now_ms)
            self._housekeeping(now_ms)
            if now_ms - self.collected_ms >= GC_EVERY_MS:
                self.collect_next = True
            lost = getattr(hal, "adc_overruns", 0)
            if lost != self.adc_overruns:
                self.event(4, wire.EV_ADC_OVERRUN, "ADC blocks lost: %d in all" % lost)
                self.adc_overruns = lost

    def run(self) -> None:
        while True:
            self.step()
