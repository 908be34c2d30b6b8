"""Batched reads ([board] read_batch_s): one wake-up per batch while the board talks, not one per fragment."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gridtap.board import link as linkmod
from gridtap.config import parse_config
from gridtap.errors import UserError
from gridtap_fw import wire
from tests.support.daemon import IMP, PULSE, config_text, running_daemon
from tests.support.fakeboard import FakeBoard

T0 = 1_790_000_000


def _times(msgs: list[wire.Message]) -> list[int]:
    return [m.values[2] for m in msgs if m.mtype == wire.TIME]


def test_a_batched_link_reads_fragments_in_one_pass_and_listens_again_when_quiet(short_tmp: Path) -> None:
    board = FakeBoard(short_tmp)
    board.appear()
    link = linkmod.SerialLink(str(board.path), 115200)
    try:
        assert link.poll(0.0, batch_s=0.3) == []  # opens the port
        board.send(wire.TIME, (T0, 0, 1, 1))
        assert _times(link.poll(2.0, batch_s=0.3)) == [1]  # the first byte after silence: read at once
        assert link.next_read is not None  # ... and the next read is scheduled, the port unwatched
        start = time.monotonic()
        for up in (2, 3, 4):  # three fragments, 50 ms apart
            board.send(wire.TIME, (T0, 0, up, 1))
            time.sleep(0.05)
        got: list[wire.Message] = []
        while not got and time.monotonic() - start < 2.0:
            got = link.poll(2.0, batch_s=0.3)
        assert _times(got) == [2, 3, 4]  # one read took all three
        assert time.monotonic() - start >= 0.25
        # Nothing more arrives: the scheduled read finds nothing and the link listens for the port again.
        assert link.poll(2.0, batch_s=0.3) == [] and link.next_read is None
        board.send(wire.TIME, (T0, 0, 5, 1))
        assert _times(link.poll(2.0, batch_s=0.3)) == [5]
        # batch_s = 0 (a command awaits its answer, or MQTT is on): reads are prompt again
        assert link.poll(0.0, batch_s=0.0) == [] and link.next_read is None
    finally:
        link.dispose()
        board.close()


def test_a_big_batched_read_is_followed_by_the_next_one_soon() -> None:
    link = linkmod.SerialLink("/nonexistent", 115200, clock=lambda: 100.0)
    try:
        link._schedule_read(1.0, 300)
        assert link.next_read == 101.0
        link._schedule_read(1.0, linkmod.BATCH_BYTES + 1)
        assert link.next_read == 100.0 + linkmod.BATCH_BUSY_S
    finally:
        link.dispose()


def _fragmented_seconds(board: FakeBoard, n: int, period: float) -> None:
    """n board seconds, each sent as three pieces 60 ms apart (CT frames, pulses, TIME), as a board does."""
    for i in range(n):
        start = time.monotonic()
        board.step(T0 + i, power_w=[1800.0, 360.0])
        time.sleep(0.06)
        board.step(T0 + i, pulses=[1, 0])
        time.sleep(0.06)
        board.send_time()
        time.sleep(max(0.0, period - (time.monotonic() - start)))


@pytest.mark.parametrize("batch", [0.25, 0.0])
def test_batched_reads_ack_once_per_second_and_lose_nothing(short_tmp: Path, batch: float) -> None:
    board = FakeBoard(short_tmp)
    board.appear()
    text = config_text(board.path, short_tmp / "state").replace(
        'baud = 115200', f'baud = 115200\nread_batch_s = {batch}')
    with running_daemon(board, text, short_tmp) as rig:
        rig.wait(lambda: board.commits >= 1 and not rig.daemon.session.pending)  # type: ignore[union-attr]
        time.sleep(0.3)
        acks0 = len(board.got(wire.ACK))
        n = 8
        _fragmented_seconds(board, n, period=batch or 0.25)
        assert board.wait_acked()
        rig.wait(lambda: rig.total(PULSE) == n * 1000)
        assert rig.total(IMP) == n * 500
        acks = len(board.got(wire.ACK)) - acks0
    # One ACK per read that took reliable frames: batched, one read per batch while the board talks;
    # prompt, one per fragment with COUNTER or PULSE frames (two a second).
    if batch:
        assert acks <= n + 2, f"{acks} ACK frames for {n} fragmented seconds with read_batch_s = {batch}"
    else:
        assert acks >= 1.5 * n, f"prompt reads ACK every fragment: {acks} ACKs for {n} seconds"


def test_read_batch_defaults_to_prompt_reads_when_mqtt_is_configured(short_tmp: Path) -> None:
    base = config_text(short_tmp / "tty", short_tmp / "state")
    assert parse_config(base, short_tmp / "a.toml").board.read_batch_s == 1.0
    mq = base + '\n[mqtt]\nhost = "127.0.0.1"\nport = 1883\n'
    assert parse_config(mq, short_tmp / "b.toml").board.read_batch_s == 0.0
    both = mq.replace("baud = 115200", "baud = 115200\nread_batch_s = 0.5")
    assert parse_config(both, short_tmp / "c.toml").board.read_batch_s == 0.5
    with pytest.raises(UserError, match=r"line 1[0-9]: \[board\] key 'read_batch_s': must be 0..1.5"):
        parse_config(base.replace("baud = 115200", "baud = 115200\nread_batch_s = 2"), short_tmp / "d.toml")
