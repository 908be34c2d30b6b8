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
# wins. The brownout save is one ordinary record write (3 pages on gridtap-1)
# after which the store refuses to write until it is re-armed.
#
# Layout 2 (#17) adds each CT's reactive pair (Q+, Q- in mvarh) after its real
# pair, which makes the record 134 bytes and the slot 3 pages instead of 2. A
# ring of layout-1 records (128-byte slots) is still read at boot when no
# layout-2 record is intact: its registers are restored with Q at 0, and the
# first layout-2 record goes into the first 3-page slot that begins after the
# old record, so a torn first write still leaves that record to boot from.

import struct

from gridtap_fw import wire

MAGIC = 0x4354  # "TC"
LAYOUT = 2
LAYOUT_V1 = 1  # real registers only; read for migration, never written
HEAD_FMT = "<HBBBBIII"  # magic, layout, n_ct, n_pulse, flags, seq, boot_count, brownout_count
HEAD_LEN = struct.calcsize(HEAD_FMT)
CT_FMT = "<IHIHIHIH"  # imp_wh, imp_milli, exp_wh, exp_milli, then Q+ and Q- (varh, milli)
CT_FMT_V1 = "<IHIH"  # imp_wh, imp_milli, exp_wh, exp_milli
PULSE_FMT = "<IIIHIH"  # pulses, base_pulses, base_wh, base_milli, last_s, last_ms
RING_PAGE = 16  # the ring starts at byte 1024

FLAG_BROWNOUT = 0x01  # written by the brownout save


class Counters:
    """Everything the counter record holds."""

    def __init__(self, n_ct: int, n_pulse: int) -> None:
        self.boot_count = 0
        self.brownout_count = 0
        self.flags = 0
        self.ct = [[0, 0, 0, 0] for _ in range(n_ct)]  # [imp_mwh, exp_mwh, qpos_mvarh, qneg_mvarh]
        self.pulse = [[0, 0, 0, 0] for _ in range(n_pulse)]  # [pulses, base_pulses, base_milli, last_unix_ms]


def _ct_fmt(layout: int) -> str:
    return CT_FMT if layout == LAYOUT else CT_FMT_V1


def record_len(n_ct: int, n_pulse: int, layout: int = LAYOUT) -> int:
    return HEAD_LEN + n_ct * struct.calcsize(_ct_fmt(layout)) + n_pulse * struct.calcsize(PULSE_FMT) + 4


def _split(milli: int):
    """A register in thousandths as the record's (whole u32, milli u16) pair."""
    return (milli // 1000) & 0xFFFFFFFF, milli % 1000


def encode(c, seq: int) -> bytes:
    """A layout-2 record (the only one the firmware writes)."""
    out = bytearray(struct.pack(HEAD_FMT, MAGIC, LAYOUT, len(c.ct), len(c.pulse), c.flags & 0xFF,
                                seq & 0xFFFFFFFF, c.boot_count & 0xFFFFFFFF, c.brownout_count & 0xFFFFFFFF))
    for imp, exp, qpos, qneg in c.ct:
        out += struct.pack(CT_FMT, *(_split(imp) + _split(exp) + _split(qpos) + _split(qneg)))
    for pulses, base_pulses, base_milli, last_ms in c.pulse:
        out += struct.pack(PULSE_FMT, pulses & 0xFFFFFFFF, base_pulses & 0xFFFFFFFF,
                           *(_split(base_milli) + _split(last_ms)))
    out += struct.pack("<I", wire.crc(out))
    return bytes(out)


def decode(data, n_ct: int, n_pulse: int, layout: int = LAYOUT):
    """(seq, Counters) if data holds an intact record of this layout for this board, else None.

    A layout-1 record restores Q+ and Q- as 0: it never held them."""
    n = record_len(n_ct, n_pulse, layout)
    if len(data) < n:
        return None
    data = bytes(data[:n])
    if wire.crc(data[:n - 4]) != struct.unpack_from("<I", data, n - 4)[0]:
        return None
    magic, lay, nc, npl, flags, seq, boot, brown = struct.unpack_from(HEAD_FMT, data, 0)
    if magic != MAGIC or lay != layout or nc != n_ct or npl != n_pulse:
        return None
    c = Counters(n_ct, n_pulse)
    c.flags = flags
    c.boot_count = boot
    c.brownout_count = brown
    fmt = _ct_fmt(layout)
    step = struct.calcsize(fmt)
    at = HEAD_LEN
    for k in range(n_ct):
        f = struct.unpack_from(fmt, data, at)
        regs = [0, 0, 0, 0]
        for j in range(len(f) // 2):
            if f[2 * j + 1] > 999:
                return None
            regs[j] = f[2 * j] * 1000 + f[2 * j + 1]
        c.ct[k] = regs
        at += step
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
        self.migrated = False  # the last load found a layout-1 ring
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

    def _newest(self, layout: int, slot_bytes: int, n_slots: int):
        """(seq, slot, Counters) of the newest intact record of one layout in its ring geometry."""
        rec_len = record_len(self.n_ct, self.n_pulse, layout)
        cands = []
        for slot in range(n_slots):
            h = self.hal.eeprom_read(self.ring_base + slot * slot_bytes, HEAD_LEN)
            if len(h) < HEAD_LEN:
                continue
            head = struct.unpack_from(HEAD_FMT, h, 0)
            if head[0] == MAGIC and head[1] == layout:
                cands.append((head[5], slot))
        cands.sort()
        while cands:
            seq, slot = cands.pop()
            got = decode(self.hal.eeprom_read(self.ring_base + slot * slot_bytes, rec_len),
                         self.n_ct, self.n_pulse, layout)
            if got is not None and got[0] == seq:
                return seq, slot, got[1]
        return None

    def load_counters(self):
        """The newest intact Counters (and remember where the ring stands), or None.

        Only when no layout-2 record is intact is the ring read as layout 1 (a board
        flashed over an older firmware's ring): once one layout-2 record is written,
        every layout-1 record is older, so a normal boot reads each header once."""
        got = self._newest(LAYOUT, self.slot_bytes, self.n_slots)
        if got is not None:
            self.seq = got[0]
            self.next_slot = (got[1] + 1) % self.n_slots
            return got[2]
        old_bytes = -(-record_len(self.n_ct, self.n_pulse, LAYOUT_V1) // self.page) * self.page
        got = self._newest(LAYOUT_V1, old_bytes, (self.size - self.ring_base) // old_bytes)
        if got is None:
            return None
        self.seq = got[0]
        # The first new slot that begins after the old record ends, so the first
        # layout-2 write cannot tear it; past the end, slot 0, far below it.
        nxt = -(-(got[1] + 1) * old_bytes // self.slot_bytes)
        self.next_slot = nxt if nxt < self.n_slots else 0
        self.migrated = True
        return got[2]

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
