# The kernel's instructions per V/I sample pair on the emulated Cortex-M0.
#   sys.argv = [prog, <file of u16 samples, V + CTs per set>, <nch>, <sets>, <block sets>, <hyst>,
#               <delays,...>, [gtkernel]]
# The viper kernel (gridtap_fw.kernel), or with "gtkernel" the C kernel as the
# dynamic native module (firmware/ports/qemu_m0/natmod), called the same way.
# Fed as the firmware core feeds it and as native/m0plus/harness.py feeds the C
# kernel (bench area kernel): DMA blocks of <block sets>, each consumed in calls
# that stop at rising crossings. Prints "KERNEL <sets> <calls> <instructions>".
import sys
from array import array

import m0

from gridtap_fw import kernel


def main():
    path, nch, total = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    block_sets, hyst = int(sys.argv[4]), int(sys.argv[5])
    delays = [int(d) for d in sys.argv[6].split(",")]
    data = bytearray(total * nch * 2)
    f = m0.File(path, "rb")
    if f.readinto(data) != len(data):
        raise ValueError("%s holds fewer than %d sets" % (path, total))
    f.close()
    st = array("i", [2048 | (2048 << 16)] * kernel.STATE_LEN)
    for j in range(kernel.HIST_WORD):
        st[j] = 0
    st[2] = hyst
    st[4] = 128
    for k, d in enumerate(delays):
        st[5 + k] = d
    out = array("i", [0] * (2 + 6 * (nch - 1)))
    blk = bytearray(block_sets * nch * 2)
    mv = memoryview(data)
    block = kernel.block
    if sys.argv[7:] == ["gtkernel"]:
        import gtkernel

        block = gtkernel.block
    sets = calls = instr = 0
    b0 = 0
    while b0 < total:
        n = min(block_sets, total - b0)
        blk[:n * nch * 2] = mv[b0 * nch * 2:(b0 + n) * nch * 2]  # the DMA block, as in the harness
        pos = 0
        while pos < n:
            t0 = m0.icount()
            k = block(blk, pos, n, nch, st, out)
            instr += (m0.icount() - t0) & 0x3FFFFFFF
            pos += k
            calls += 1
        sets += n
        b0 += n
    print("KERNEL", sets, calls, instr)


main()
