# The host link: framing via wire.py, sequence numbers, the reliable ring.
#
# COUNTER, PULSE and EVENT frames are reliable (docs/protocol.md section 2):
# each stays in a bounded RAM ring until the host ACKs its seq. An entry that
# is not ACKed within RETX_MS is sent again with FLAG_RETX and the same seq,
# backing off to RETX_MAX_MS while the host is silent; when any frame arrives
# from the host after a silence, the whole backlog becomes due at once and is
# replayed at RETX_PER_POLL frames per poll.
#
# When the ring is full it is aged like Flukso's buffer rather than dropping
# the newest tuple: for the smallest bucket width in BUCKETS_MS that frees
# something, only the first and the last tuple per (sensor, time bucket) are
# kept. Counters are cumulative, so the energy in each bucket (last - first)
# and between buckets stays exact; only resolution is lost. EVENTs are kept
# apart: at most MAX_EVENTS of them, oldest dropped first.

from gridtap_fw import wire

RING = 128
MAX_EVENTS = 16
RETX_MS = 2000
RETX_MAX_MS = 32000
RETX_PER_POLL = 8
SILENCE_MS = 5000
BUCKETS_MS = (10000, 60000, 300000, 900000, 3600000, 21600000, 86400000)

# ring entry fields
E_SEQ = 0
E_TYPE = 1
E_VALUES = 2
E_KEY = 3  # sensor key: CT channel k, 256 + pulse input i, or -1 for events
E_T = 4  # uptime ms when queued (aging buckets)
E_DUE = 5  # uptime ms of the next (re)send
E_TRIES = 6


NOTHING: tuple = ()


class Link:
    def __init__(self, hal, ring: int = RING) -> None:
        self.hal = hal
        self.ring_max = ring
        self.seq = 0  # seq of the next new frame
        self.ring: list = []
        self.dec = wire.Decoder()
        self.last_rx_ms: int | None = None
        self.sent = 0
        self.resent = 0
        self.aged = 0  # tuples removed by aging
        self.events_dropped = 0

    def _next_seq(self) -> int:
        # skip a seq still waiting in the ring, so one ACK never matches two frames
        s = self.seq
        busy = [e[E_SEQ] for e in self.ring]
        while s in busy:
            s = (s + 1) & 0xFFFF
        self.seq = (s + 1) & 0xFFFF
        return s

    def send(self, mtype: int, values) -> int:
        """An unreliable frame (HELLO, TIME, GAUGE, ACK, NAK, CONFIG)."""
        seq = self._next_seq()
        self.hal.uart_write(wire.encode(mtype, seq, values))
        self.sent += 1
        return seq

    def send_reliable(self, mtype: int, values, key: int, now_ms: int) -> int:
        if len(self.ring) >= self.ring_max:
            self._age(key)
        if key < 0:
            events = [e for e in self.ring if e[E_KEY] < 0]
            if len(events) >= MAX_EVENTS:
                self.ring.remove(events[0])
                self.events_dropped += 1
        seq = self._next_seq()
        self.ring.append([seq, mtype, values, key, now_ms, now_ms + RETX_MS, 0])
        self.hal.uart_write(wire.encode(mtype, seq, values))
        self.sent += 1
        return seq

    def _age(self, new_key: int) -> None:
        ring = self.ring
        for width in BUCKETS_MS:
            groups: dict = {}
            for e in ring:
                if e[E_KEY] < 0:
                    continue
                g = (e[E_KEY], e[E_T] // width)
                lst = groups.get(g)
                if lst is None:
                    groups[g] = [e]
                else:
                    lst.append(e)
            dropped = 0
            for g in groups:
                lst = groups[g]
                if len(lst) > 2:
                    dropped += len(lst) - 2
            if not dropped:
                continue
            for g in groups:
                lst = groups[g]
                for e in lst[1:-1]:
                    e[E_TRIES] = -1
            self.ring = [e for e in ring if e[E_TRIES] >= 0]
            self.aged += dropped
            return
        # Every bucket already holds at most 2 (a very long outage): drop the
        # second-oldest tuple of the sensor with the most, keeping its first and last.
        counts: dict = {}
        for e in ring:
            if e[E_KEY] >= 0:
                counts[e[E_KEY]] = counts.get(e[E_KEY], 0) + 1
        best = None
        for k in counts:
            if counts[k] > 2 and (best is None or counts[k] > counts[best]):
                best = k
        if best is not None:
            mine = [e for e in ring if e[E_KEY] == best]
            ring.remove(mine[1])
            self.aged += 1
        elif ring:
            ring.pop(0)
            self.aged += 1

    def ack(self, seqs) -> int:
        before = len(self.ring)
        self.ring = [e for e in self.ring if e[E_SEQ] not in seqs]
        return before - len(self.ring)

    def poll(self, now_ms: int) -> "list | tuple":
        """Read the UART; handle ACKs; return the other host messages."""
        data = self.hal.uart_read()
        if not data:
            return NOTHING  # the common case, once per block: no list to allocate
        msgs = self.dec.feed(data)
        if msgs:
            if self.last_rx_ms is None or now_ms - self.last_rx_ms >= SILENCE_MS:
                for e in self.ring:
                    e[E_DUE] = now_ms
                    e[E_TRIES] = 0
            self.last_rx_ms = now_ms
        out = []
        for m in msgs:
            if m.mtype == wire.ACK:
                self.ack(m.values[0])
            else:
                out.append(m)
        return out

    def service(self, now_ms: int) -> None:
        """Resend what is due, oldest first, a few frames per call."""
        budget = RETX_PER_POLL
        for e in self.ring:
            if budget == 0:
                break
            if now_ms >= e[E_DUE]:
                self.hal.uart_write(wire.encode(e[E_TYPE], e[E_SEQ], e[E_VALUES], wire.FLAG_RETX))
                e[E_TRIES] += 1
                back = RETX_MS << min(e[E_TRIES], 4)
                e[E_DUE] = now_ms + min(back, RETX_MAX_MS)
                self.resent += 1
                budget -= 1
