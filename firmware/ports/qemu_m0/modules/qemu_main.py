# Boot module of the qemu_m0 port under the simulator (gridtap_sim.qemu_m0):
#   sys.argv = [prog, <boot directory of the simulator's pipes>, ["profile"]]
import sys

import m0budget

from gridtap_fw import app, hal_qemu

budget = m0budget.Budget()
if "profile" in sys.argv[2:]:
    m0budget.profile(budget)
app.App(hal_qemu.QemuHal(sys.argv[1], budget)).run()
