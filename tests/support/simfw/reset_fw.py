# Counts pulse edges and asks for a soft reset 1.5 s into its first boot; prints every edge.
from gridtap_fw.hal_virtual import VirtualHal

hal = VirtualHal()
buf = bytearray(hal.block_sets * 2 * hal.n_channels)
print("boot cause", hal.reset_cause())
while True:
    hal.adc_block(buf)
    for e in hal.pulse_edges():
        print("edge", e[0], e[2], e[1])
    if hal.reset_cause() == 1 and hal.ticks_us() >= 1500000:
        hal.reset()
