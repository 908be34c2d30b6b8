"""Type-check firmware/ against the real MicroPython rp2 port stubs.

The stubs (PyPI micropython-rp2-rpi-pico-stubs, pinned in the Makefile) are
installed by `make stubs` into .stubs/rp2, away from the CPython venv: they
ship their own stdlib (MicroPython's, not CPython's), which mypy uses as its
typeshed. Errors inside the stub files themselves are not ours and are
silenced per module; every firmware module is checked with
check_untyped_defs. Exit status 0 means clean.

    python tests/support/fwtest/typecheck_rp2.py        (make typecheck runs this)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
STUBS = ROOT / ".stubs" / "rp2"
FIRMWARE = ROOT / "firmware"

# Modules of other owners that do not pass yet; checked but their errors are
# not fatal until the owner fixes them (then delete the entry). Printed on
# every run so they are not forgotten.
PENDING: dict[str, str] = {}


def stub_modules() -> list[str]:
    names = []
    for p in sorted(STUBS.iterdir()):
        if p.suffix == ".pyi":
            names.append(p.stem)
        elif p.is_dir() and (p / "__init__.pyi").exists():
            names += [p.name, p.name + ".*"]
        elif p.is_dir() and p.name == "_mpy_shed":
            names += [p.name, p.name + ".*"]
    return names


def config() -> str:
    return "\n".join([
        "[mypy]",
        "python_version = 3.11",
        "check_untyped_defs = True",
        "no_site_packages = True",
        "warn_unused_ignores = False",
        f"custom_typeshed_dir = {STUBS}",
        f"mypy_path = {STUBS}:{FIRMWARE}",
        "",
        "[mypy-%s]" % ",".join(stub_modules()),
        "ignore_errors = True",
        "",
        "[mypy-gtkernel]",  # the optional C user module (native/mpy_module)
        "ignore_missing_imports = True",
        "",
        # hal_qemu's port modules: m0 is C (firmware/ports/qemu_m0/modm0.c), m0budget the
        # port's own Python; neither is on a Pico
        "[mypy-m0,m0budget]",
        "ignore_missing_imports = True",
        "",
    ] + ([f"[mypy-{','.join(PENDING)}]", "ignore_errors = True", ""] if PENDING else []))


def files() -> list[str]:
    return [str(FIRMWARE / "main.py")] + sorted(str(p) for p in (FIRMWARE / "gridtap_fw").glob("*.py"))


def run(extra: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    if not (STUBS / "machine.pyi").exists():
        raise SystemExit(f"{STUBS} has no rp2 stubs: run `make stubs`")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "mypy.ini"
        cfg.write_text(config())
        env = {k: v for k, v in os.environ.items() if k != "MYPYPATH"}
        return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(cfg),
                               "--cache-dir", str(Path(tmp) / "cache"), *files(), *(extra or [])],
                              capture_output=True, text=True, cwd=ROOT, env=env)


if __name__ == "__main__":
    for mod, why in PENDING.items():
        print(f"typecheck_rp2: {mod} not enforced yet ({why})")
    proc = run()
    sys.stdout.write(proc.stdout + proc.stderr)
    sys.exit(proc.returncode)
