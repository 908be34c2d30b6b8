# Boot module of the qemu_m0 port under the simulator (gridtap_sim.qemu_m0):
#   sys.argv = [prog, <boot directory of the simulator's pipes>, ["profile"]]
import gc

gc.threshold(8192)  # as firmware/main.py: the boot's live objects low in the heap

import sys  # noqa: E402

import m0budget  # noqa: E402

from gridtap_fw import app, hal_qemu  # noqa: E402

budget = m0budget.Budget()
if "profile" in sys.argv[2:]:
    m0budget.profile(budget)
app.App(hal_qemu.QemuHal(sys.argv[1], budget)).run()
