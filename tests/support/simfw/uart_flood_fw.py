# Writes 60 kB/s to the UART with under 16 KB of heap to spare: hal_virtual must not keep
# or gather the writes (the batch protocol once joined a second's writes: MemoryError).
import gc

from gridtap_fw.hal_virtual import VirtualHal

hal = VirtualHal()
buf = bytearray(hal.block_sets * 2 * hal.n_channels)
frame = bytes(range(200))
hog = []  # what the firmware core would be using
gc.collect()
# gc.mem_free is MicroPython's
while gc.mem_free() > 16000:  # type: ignore[attr-defined]
    hog.append(bytearray(512))
blocks = 0
while True:
    hal.adc_block(buf)
    for _ in range(3):
        hal.uart_write(frame)
    blocks += 1
    if blocks % 100 == 0:
        print("blocks", blocks)
