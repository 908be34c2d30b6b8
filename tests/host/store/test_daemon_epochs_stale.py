"""Epoch decisions wait for a fresh reading; a reboot seen only in TIME asks for HELLO."""

from __future__ import annotations

from pathlib import Path

from gridtap.store.epochs import CounterStore

T = 1_780_000_000.0


def test_an_older_resent_reading_does_not_decide_a_new_epoch(tmp_path: Path) -> None:
    store = CounterStore(tmp_path / "c.sqlite")
    store.update("s", 1, 100_000, T + 10)
    store.update("s", 1, 150_000, T + 21)  # counted in epoch 1, really of the next boot
    # older: no decision, and no total (150_000 is the total at T + 21, not at T + 20)
    assert store.update("s", 2, 140_000, T + 20) == (None, False)
    assert store.update("s", 2, 160_000, T + 22) == (160_000, True)   # fresh: carried on
    assert store.total("s") == 160_000


def test_a_register_that_stands_still_keeps_its_newest_stamp(tmp_path: Path) -> None:
    store = CounterStore(tmp_path / "c.sqlite")
    store.update("s", 1, 100_000, T + 10)
    assert store.update("s", 1, 100_000, T + 20) == (100_000, False)
    assert store.state["s"].t == T + 20 and not store.pending   # newest stamp; no flush for it
    assert store.update("s", 1, 100_000, T + 15) == (100_000, False)
    assert store.state["s"].t == T + 20


def test_a_fresh_lower_reading_still_means_lost_registers(tmp_path: Path) -> None:
    store = CounterStore(tmp_path / "c.sqlite")
    store.update("s", 1, 150_000, T + 21)
    assert store.update("s", 2, 5_000, T + 30) == (150_000, False)  # flat: nothing counted twice
    assert store.update("s", 2, 7_000, T + 31) == (152_000, True)


def test_catch_up_takes_a_newer_total_of_the_current_epoch_only(tmp_path: Path) -> None:
    """A restart after a crash: the spool holds a newer total than the store's last flush."""
    store = CounterStore(tmp_path / "c.sqlite")
    store.update("s", 1, 100_000, T + 10)
    store.update("s", 2, 5_000, T + 30)      # lost registers: the total carries on flat
    store.update("s", 2, 7_000, T + 31)
    assert store.catch_up("s", 102_000, T + 25) is False   # not above the store's total
    assert store.catch_up("s", 103_000, T + 35) is True
    st = store.state["s"]
    assert (st.epoch, st.raw, st.total, st.t) == (2, 8_000, 103_000, T + 35)
    assert store.update("s", 2, 9_000, T + 36) == (104_000, True)
    assert store.catch_up("s", 110_000, T + 20) is True and store.state["s"].t == T + 36  # stamp kept
    assert store.catch_up("s", 110_000, T + 40) is True and store.state["s"].t == T + 40  # stood still
    store.update("s", 3, 1_000, T + 50)       # lost registers again: the floor is 110_000
    assert store.catch_up("s", 110_000, T + 60) is False   # maybe the earlier epoch's total
    store.seed("r", 50_000, T)                # a rebuilt store's seed has no board epoch
    assert store.catch_up("r", 60_000, T + 5) is False and store.total("r") == 50_000
    assert store.catch_up("unknown", 1, T) is False


def test_uptime_going_back_without_hello_stops_taking_tuples(tmp_path: Path) -> None:
    from gridtap.board.session import Session
    from gridtap.config import BoardConfig, SensorConfig
    from gridtap.store.live import LiveStore
    from gridtap_fw import wire

    sent: list[bytes] = []

    def send(b: bytes) -> bool:
        sent.append(b)
        return True

    store = CounterStore(tmp_path / "c.sqlite")
    s = Session(BoardConfig(), (SensorConfig("grid", "a" * 32, "ct", 0),), store, LiveStore(),
                send, sinks=[])

    def feed(mtype: int, seq: int, values: tuple[object, ...]) -> None:
        for m in wire.Decoder().feed(wire.encode(mtype, seq, values)):
            s.handle(m)

    uid = b"\x02" * 8
    feed(wire.HELLO, 0, (uid, 1, 0, 0, 1, 1, 1, 0, 3, 2))
    feed(wire.TIME, 1, (int(T) + 5, 0, 50_000, 1))
    feed(wire.COUNTER, 2, (0, int(T) + 10, 0, 100, 0, 0, 0))
    assert store.total("a" * 32) == 100_000
    sent.clear()
    feed(wire.TIME, 0, (int(T) + 12, 0, 1_500, 1))  # uptime went back: a reboot whose HELLO was lost
    asked = [m.mtype for b in sent for m in wire.Decoder().feed(b)]
    assert wire.HELLO_REQ in asked
    feed(wire.COUNTER, 1, (0, int(T) + 13, 0, 140, 0, 0, 0))  # not taken into the old epoch
    assert store.total("a" * 32) == 100_000
    feed(wire.HELLO, 2, (uid, 1, 0, 0, 1, 2, 2, 1, 3, 2))
    feed(wire.COUNTER, 1, (0, int(T) + 13, 0, 140, 0, 0, 0))
    assert store.total("a" * 32) == 140_000
