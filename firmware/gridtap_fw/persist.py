# EEPROM persistence: the counter ring and the two config slots.
#
# hardware/persistence.md documents the byte layout and the budgets. In short
# (32 KiB, 64-byte pages, 5 ms per page write):
#   page 0          unused (a stray write at power-up lands here first)
#   config slots A/B cfg_pages each from page 1; newest valid seq wins
#   counter ring    from page RING_PAGE to the end, slots of slot_pages pages
# A counter record is written into the slot after the newest one, i.e. over
# the oldest, so a write torn by a dying supply can only destroy the oldest
# record; every record carries a sequence number and a CRC-32 and a record
# whose CRC fails is never used. At boot the newest record with a good CRC
# wins. The brownout save is one ordinary record write (2 pages on gridtap-1)
# after which the store refuses to write until it is re-armed.

import struct

from gridtap_fw import wire

MAGIC = 0x4354  # "TC"
LAYOUT = 1
HEAD_FMT = "<HBBBBIII"  # magic, layout, n_ct, n_pulse, flags, seq, boot_count, brownout_count
HEAD_LEN = struct.calcsize(HEAD_FMT)
CT_FMT = "<IHIH"  # imp_wh, imp_milli, exp_wh, exp_milli
PULSE_FMT = "<IIIHIH"  # pulses, base_pulses, base_wh, base_milli, last_s, last_ms
RING_PAGE = 16  # the ring starts at byte 1024

FLAG_BROWNOUT = 0x01  # written by the brownout save


class Counters:
    """Everything the counter record holds."""

    def __init__(self, n_ct: int, n_pulse: int) -> None:
        self.boot_count = 0
        self.brownout_count = 0
        self.flags = 0
        self.ct = [[0, 0] for _ in range(n_ct)]  # [imp_mwh, exp_mwh]
        self.pulse = [[0, 0, 0, 0] for _ in range(n_pulse)]  # [pulses, base_pulses, base_milli, last_unix_ms]


def record_len(n_ct: int, n_pulse: int) -> int:
    return HEAD_LEN + n_ct * struct.calcsize(CT_FMT) + n_pulse * struct.calcsize(PULSE_FMT) + 4


def encode(c, seq: int) -> bytes:
    out = bytearray(struct.pack(HEAD_FMT, MAGIC, LAYOUT, len(c.ct), len(c.pulse), c.flags & 0xFF,
                                seq & 0xFFFFFFFF, c.boot_count & 0xFFFFFFFF, c.brownout_count & 0xFFFFFFFF))
    for imp, exp in c.ct:
        out += struct.pack(CT_FMT, (imp // 1000) & 0xFFFFFFFF, imp % 1000, (exp // 1000) & 0xFFFFFFFF,
                           exp % 1000)
    for pulses, base_pulses, base_milli, last_ms in c.pulse:
        out += struct.pack(PULSE_FMT, pulses & 0xFFFFFFFF, base_pulses & 0xFFFFFFFF,
                           (base_milli // 1000) & 0xFFFFFFFF, base_milli % 1000,
                           (last_ms // 1000) & 0xFFFFFFFF, last_ms % 1000)
    out += struct.pack("<I", wire.crc(out))
    return bytes(out)


def decode(data, n_ct: int, n_pulse: int):
    """(seq, Counters) if data holds an intact record for this board, else None."""
    n = record_len(n_ct, n_pulse)
    if len(data) < n:
        return None
    data = bytes(data[:n])
    if wire.crc(data[:n - 4]) != struct.unpack_from("<I", data, n - 4)[0]:
        return None
    magic, layout, nc, npl, flags, seq, boot, brown = struct.unpack_from(HEAD_FMT, data, 0)
    if magic != MAGIC or layout != LAYOUT or nc != n_ct or npl != n_pulse:
        return None
    c = Counters(n_ct, n_pulse)
    c.flags = flags
    c.boot_count = boot
    c.brownout_count = brown
    at = HEAD_LEN
    for k in range(n_ct):
        iw, im, ew, em = struct.unpack_from(CT_FMT, data, at)
        if im > 999 or em > 999:
            return None
        c.ct[k] = [iw * 1000 + im, ew * 1000 + em]
        at += struct.calcsize(CT_FMT)
    for k in range(n_pulse):
        p, bp, bw, bm, ls, lm = struct.unpack_from(PULSE_FMT, data, at)
        if bm > 999 or lm > 999:
            return None
        c.pulse[k] = [p, bp, bw * 1000 + bm, ls * 1000 + lm]
        at += struct.calcsize(PULSE_FMT)
    return seq, c


class Store:
    def __init__(self, hal, board, n_ct: int, n_pulse: int, cfg_len: int) -> None:
        e = board["i2c_eeprom"]
        self.hal = hal
        self.page = int(e["page_bytes"])
        self.size = int(e["size_bytes"])
        self.n_ct = n_ct
        self.n_pulse = n_pulse
        self.rec_len = record_len(n_ct, n_pulse)
        self.slot_pages = (self.rec_len + self.page - 1) // self.page
        self.slot_bytes = self.slot_pages * self.page
        self.cfg_len = cfg_len
        self.cfg_pages = (cfg_len + self.page - 1) // self.page
        ring_page = max(RING_PAGE, 1 + 2 * self.cfg_pages)
        self.ring_base = ring_page * self.page
        self.n_slots = (self.size - self.ring_base) // self.slot_bytes
        if self.n_slots < 2:
            raise ValueError("EEPROM too small for the counter ring")
        self.seq = 0  # seq of the newest record
        self.next_slot = 0
        self.armed = True  # False after the brownout save: no more writes
        self.page_writes = 0
        self.saves = 0
        # A record saved a page per step (save_counters(spread=True)): (addr, data, next offset).
        # Each page blocks for its write cycle (5 ms on a 24LC256), and two in one step
        # outlast a Pico's DMA slack (hardware/qemu-m0.md). Until its last page is written
        # the slot reads as torn and the previous record stands, as after a power cut.
        self.pending: tuple | None = None

    def slot_addr(self, slot: int) -> int:
        return self.ring_base + slot * self.slot_bytes

    def _write(self, addr: int, data) -> None:
        page = self.page
        for off in range(0, len(data), page):
            self.hal.eeprom_write(addr + off, data[off:off + page])
            self.page_writes += 1

    def load_counters(self):
        """The newest intact Counters (and remember where the ring stands), or None."""
        cands = []
        for slot in range(self.n_slots):
            h = self.hal.eeprom_read(self.slot_addr(slot), HEAD_LEN)
            if len(h) < HEAD_LEN:
                continue
            head = struct.unpack_from(HEAD_FMT, h, 0)
            if head[0] == MAGIC and head[1] == LAYOUT:
                cands.append((head[5], slot))
        cands.sort()
        while cands:
            seq, slot = cands.pop()
            got = decode(self.hal.eeprom_read(self.slot_addr(slot), self.rec_len), self.n_ct, self.n_pulse)
            if got is not None and got[0] == seq:
                self.seq = seq
                self.next_slot = (slot + 1) % self.n_slots
                return got[1]
        return None

    def save_counters(self, c, spread: bool = False) -> bool:
        """Write one record over the oldest slot. False if disarmed (after a brownout save).

        spread: write only the first page now and the others one per service() call."""
        if not self.armed:
            return False
        self.finish()
        data = encode(c, self.seq + 1)
        addr = self.slot_addr(self.next_slot)
        if spread and len(data) > self.page:
            self.pending = (addr, data, self.page)
            self._write(addr, data[:self.page])
        else:
            self._write(addr, data)
        self.seq += 1
        self.next_slot = (self.next_slot + 1) % self.n_slots
        self.saves += 1
        return True

    def service(self) -> None:
        """Write the next page of a spread record (once per step while one is pending)."""
        if self.pending is None:
            return
        addr, data, off = self.pending
        end = off + self.page
        self.pending = (addr, data, end) if end < len(data) else None
        self._write(addr + off, data[off:end])

    def finish(self) -> None:
        """Write what is left of a spread record now."""
        while self.pending is not None:
            self.service()

    def brownout_save(self, c) -> bool:
        """The one write allowed once the supply monitor fired; then disarm.

        A spread record still being written is abandoned: this newer one goes to the
        next slot, within the hold-up budget."""
        self.pending = None
        c.flags |= FLAG_BROWNOUT
        ok = self.save_counters(c)
        self.armed = False
        return ok

    # ------------------------------------------------------------ config

    def cfg_addr(self, slot: int) -> int:
        return (1 + slot * self.cfg_pages) * self.page

    def load_config(self, cfg, make) -> bool:
        """Load the newest intact config image into cfg; make() builds a scratch Config."""
        best = None
        for slot in range(2):
            trial = make()
            if trial.from_bytes(self.hal.eeprom_read(self.cfg_addr(slot), self.cfg_len)):
                if best is None or trial.seq > best.seq:
                    best = trial
        if best is None:
            return False
        cfg.from_bytes(best.to_bytes(best.seq))
        return True

    def save_config(self, cfg) -> bool:
        if not self.armed:
            return False
        self.finish()
        seq = cfg.seq + 1
        self._write(self.cfg_addr(seq & 1), cfg.to_bytes(seq))
        cfg.seq = seq
        return True
