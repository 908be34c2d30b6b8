"""GET /status: the board as its last HELLO described it, and the EEPROM writes the host sees (#15 item 5)."""

from __future__ import annotations

import json
import time

from gridtap_fw import wire
from tests.host.outputs.test_daemon_restapi import get
from tests.support.daemon import Rig


def test_status_names_the_board_its_reset_and_eeprom_saves(rig: Rig) -> None:
    st = json.loads(get(rig, "/status")[2])
    b = st["board"]
    # the fake board answers the daemon's HELLO_REQ with cause 0, "unknown"
    assert (b["board_id"], b["boot_count"], b["reset_cause"]) == (rig.board.board_id.hex(), 1, "unknown")
    assert abs(b["last_hello"] - time.time()) < 30 and b["firmware"] == "0.1.0"
    t = int(time.time())
    rig.board.event(t, 3, wire.EV_BROWNOUT_SAVE, "brownout: counters saved")
    rig.board.event(t, 4, wire.EV_STORAGE, "EEPROM write failed")
    assert rig.board.wait_acked()
    rig.board.reset(cause=wire.RESET_BROWNOUT)
    rig.board.hello(wire.RESET_BROWNOUT)
    rig.wait(lambda: json.loads(get(rig, "/status")[2])["board"]["boot_count"] == 2)
    st = json.loads(get(rig, "/status")[2])
    assert st["board"]["reset_cause"] == "brownout" and st["board"]["last_hello"] >= b["last_hello"]
    assert (st["session"]["brownout_saves"], st["session"]["eeprom_faults"]) == (1, 1)
    assert st["session"]["commits"] >= 0 and st["outputs"] == {}  # no upload destination configured
