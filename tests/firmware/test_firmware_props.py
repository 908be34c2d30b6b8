"""Properties of the firmware's pure modules (they also run under CPython):
torn EEPROM writes, corrupt config images, and the aging of the tuple ring."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gridtap_fw import config, link, persist, wire
from tests.support.mpy import ROOT

BOARD = json.loads((ROOT / "hardware" / "board.json").read_text())


class Torn(Exception):
    pass


class Eeprom:
    """Page-write EEPROM whose supply dies during write number tear_at."""

    def __init__(self, tear_at: int, junk: int) -> None:
        e = BOARD["i2c_eeprom"]
        self.mem = bytearray(b"\xff" * e["size_bytes"])
        self.page = e["page_bytes"]
        self.writes = 0
        self.tear_at = tear_at
        self.junk = junk

    def eeprom_read(self, addr: int, n: int) -> bytes:
        return bytes(self.mem[addr:addr + n])

    def eeprom_write(self, addr: int, data: bytes) -> None:
        assert addr % self.page == 0 and len(data) <= self.page
        self.writes += 1
        if self.writes == self.tear_at:
            cut = self.junk % (len(data) + 1)
            self.mem[addr:addr + cut] = data[:cut]
            for j in range(addr + cut, addr + len(data)):
                self.mem[j] = (self.junk * 31 + j) & 0xFF
            raise Torn()
        self.mem[addr:addr + len(data)] = data


def counters(seed: int) -> persist.Counters:
    c = persist.Counters(3, 2)
    c.boot_count = seed % 1000
    c.brownout_count = seed % 77
    c.ct = [[seed * 1009 + k, seed * 7 + k, seed * 313 + k, seed * 5 + k] for k in range(3)]
    c.pulse = [[seed * 3 + i, i, seed * 11, 1_700_000_000_000 + seed] for i in range(2)]
    return c


def same(a: persist.Counters, b: persist.Counters) -> bool:
    return (a.boot_count, a.brownout_count, a.ct, a.pulse) == (b.boot_count, b.brownout_count, b.ct, b.pulse)


@settings(max_examples=60, deadline=None)
@given(n_saves=st.integers(1, 600), tear=st.integers(1, 1300), junk=st.integers(0, 10**6))
def test_a_torn_save_loses_only_itself(n_saves: int, tear: int, junk: int) -> None:
    ee = Eeprom(tear, junk)
    cfg_len = config.Config(3, 2).image_len()
    store = persist.Store(ee, BOARD, 3, 2, cfg_len)
    done = 0
    for s in range(1, n_saves + 1):
        try:
            store.save_counters(counters(s))
        except Torn:
            break
        done = s
    again = persist.Store(ee, BOARD, 3, 2, cfg_len)
    got = again.load_counters()
    torn = done + 1 if done < n_saves else None
    if torn is not None and got is not None and again.seq == torn:
        # the dying write happened to leave every byte right: then it is a whole record
        slot = (torn - 1) % store.n_slots
        at = store.slot_addr(slot)
        assert ee.mem[at:at + store.rec_len] == persist.encode(counters(torn), torn)
        assert same(got, counters(torn))
    elif done == 0:
        assert got is None
    else:
        assert got is not None and same(got, counters(done)) and again.seq == done


@given(st.data())
def test_config_image_round_trips_and_rejects_any_flipped_byte(data: st.DataObject) -> None:
    cfg = config.Config(3, 2)
    for k in range(3):
        items = ((wire.P_GAIN_E6, data.draw(st.integers(*wire.PARAMS[wire.P_GAIN_E6][3:5]))),
                 (wire.P_PHASE_MDEG, data.draw(st.integers(*wire.PARAMS[wire.P_PHASE_MDEG][3:5]))),
                 (wire.P_INVERT, data.draw(st.integers(0, 1))),
                 (wire.P_SENSOR_ID, data.draw(st.binary(min_size=16, max_size=16))))
        assert cfg.apply(wire.TARGET_CT, k, items) == 0
    const = data.draw(st.integers(*wire.PARAMS[wire.P_METER_CONST_MILLI][3:5]))
    assert cfg.apply(wire.TARGET_PULSE, 1, ((wire.P_METER_CONST_MILLI, const),)) == 0
    image = cfg.to_bytes(data.draw(st.integers(0, 2**32 - 1)))
    back = config.Config(3, 2)
    assert back.from_bytes(image)
    assert back.to_bytes(back.seq) == image
    at = data.draw(st.integers(0, len(image) - 1))
    bad = bytearray(image)
    bad[at] ^= data.draw(st.integers(1, 255))
    fresh = config.Config(3, 2)
    assert not fresh.from_bytes(bytes(bad))
    assert fresh.to_bytes(0) == config.Config(3, 2).to_bytes(0)  # untouched


class Uart:
    board: dict = {}

    def __init__(self) -> None:
        self.rx = b""
        self.tx: list[bytes] = []

    def uart_write(self, data: bytes) -> None:
        self.tx.append(data)

    def uart_read(self) -> bytes:
        d, self.rx = self.rx, b""
        return d


@settings(max_examples=60, deadline=None)
@given(ops=st.lists(st.tuples(st.integers(0, 3), st.integers(0, 9000), st.booleans()), min_size=1,
                    max_size=400),
       ring=st.integers(8, 40))
def test_aging_keeps_the_newest_of_every_sensor_and_order(ops: list[tuple[int, int, bool]],
                                                          ring: int) -> None:
    u = Uart()
    lk = link.Link(u, ring)
    now = 0
    newest: dict[int, int] = {}
    order: list[int] = []
    acked: set[int] = set()
    for key, dt, ack in ops:
        now += dt
        seq = lk.send_reliable(wire.COUNTER, (key, 0, 0, now, 0, 0, 0), key, now)
        newest[key] = seq
        order.append(seq)
        assert len(lk.ring) <= ring
        seqs = [e[0] for e in lk.ring]
        assert seqs == [s for s in order if s in seqs]  # oldest first, never reordered
        assert seq in seqs  # the newest tuple is never the one dropped
        for s in newest.values():
            if s not in acked:
                assert s in seqs  # every sensor's latest unacknowledged value is still queued
        if ack and lk.ring:
            first = lk.ring[0][0]
            u.rx = wire.encode(wire.ACK, 0, ([first],))
            lk.poll(now)
            acked.add(first)
            assert first not in [e[0] for e in lk.ring]


@given(st.lists(st.integers(0, 2**32 * 1000 - 1), min_size=12, max_size=12))
def test_layout2_record_fields_sit_where_persistence_md_says(regs: list[int]) -> None:
    """hardware/persistence.md's layout-2 table, byte by byte: each CT's 24 bytes from 18
    (import, export, Q+, Q-: whole u32 + milli u16), the inputs from 90, the CRC at 130."""
    import struct
    import zlib

    c = counters(5)
    c.ct = [regs[4 * k:4 * k + 4] for k in range(3)]
    rec = persist.encode(c, 77)
    assert len(rec) == persist.record_len(3, 2) == 134
    assert struct.unpack_from("<HBBBBI", rec, 0) == (0x4354, 2, 3, 2, 0, 77)
    for k in range(3):
        for j in range(4):
            whole, milli = struct.unpack_from("<IH", rec, 18 + 24 * k + 6 * j)
            assert whole * 1000 + milli == regs[4 * k + j]
    assert struct.unpack_from("<I", rec, 90)[0] == c.pulse[0][0]
    assert struct.unpack_from("<I", rec, 130)[0] == zlib.crc32(rec[:130])
    got = persist.decode(rec, 3, 2)
    assert got is not None and got[0] == 77 and got[1].ct == c.ct
