"""firmware/ type-checks against the real MicroPython rp2 port stubs (make stubs)."""

from __future__ import annotations

from pathlib import Path

from tests.support.fwtest import typecheck_rp2


def test_firmware_type_checks_against_rp2_port_stubs() -> None:
    proc = typecheck_rp2.run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "hal_rp2" in " ".join(typecheck_rp2.files())


def test_the_check_sees_the_rp2_api(tmp_path: Path) -> None:
    # A misspelt constant, a wrong keyword and a CPython-only module must all be caught,
    # so the stubs (not Any) are what the firmware is checked against.
    bad = tmp_path / "bad_fw.py"
    bad.write_text("import machine\nimport rp2\nimport subprocess\n"
                   "machine.Pin(14, machine.Pin.IN).irq(None, machine.Pin.IRQ_FALING)\n"
                   "rp2.DMA().config(reed=0)\n")
    proc = typecheck_rp2.run([str(bad)])
    assert proc.returncode != 0
    out = proc.stdout
    assert "IRQ_FALING" in out and "reed" in out and "subprocess" in out, out
