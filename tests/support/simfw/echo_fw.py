# A small MicroPython program that exercises hal_virtual the way firmware does.
# Used by tests/sim/test_sim_runner.py until (and besides) the real firmware core.
# It echoes every UART byte, counts pulse edges, keeps a boot counter in
# EEPROM page 0, and on brownout writes EEPROM pages until the power dies.
# Everything it learns goes to stdout, which the simulator logs.

import struct
from array import array

from gridtap_fw.hal_virtual import VirtualHal

SETS = 96
hal = VirtualHal()
nch = hal.n_channels
bbuf = bytearray(SETS * 2 * nch)
abuf = array("H", bytes(SETS * 2 * nch))

raw = hal.eeprom_read(0, 4)
boot = struct.unpack("<I", raw)[0]
if boot == 0xFFFFFFFF:
    boot = 0
boot += 1
hal.eeprom_write(0, struct.pack("<I", boot))
print("boot", boot, "cause", hal.reset_cause(), "uid", hal.unique_id().hex(), "t", hal.ticks_us())

blocks = 0
edges = 0
last_t = hal.ticks_us()
bad_t = 0
saves = 0
vmin = 4095
vmax = 0
while True:
    b = bbuf if blocks & 1 else abuf
    n = hal.adc_block(b)
    if n != SETS:
        print("short block", n)
    t = hal.ticks_us()
    dt = (t - last_t) & 0x3FFFFFFF
    if dt > 1000000:
        bad_t += 1
    last_t = t
    v = array("H", bytes(b)) if blocks & 1 else b
    for i in range(0, SETS * nch, nch):
        x = v[i]
        if x < vmin:
            vmin = x
        if x > vmax:
            vmax = x
    edges += len(hal.pulse_edges())
    d = hal.uart_read()
    if d:
        hal.uart_write(d)
    blocks += 1
    if hal.brownout():
        # save page after page until the supply dies: the last write is torn
        while True:
            saves += 1
            hal.eeprom_write(64 * (1 + saves % 8), bytes([saves & 0xFF]) * 64)
            print("saved", saves, hal.ticks_us())
    if blocks % 50 == 0:
        print("stat", blocks, t, edges, vmin, vmax, bad_t)
        vmin = 4095
        vmax = 0
