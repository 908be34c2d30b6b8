"""The per-sample DSP kernel in MicroPython viper (the twin of native/gt_kernel.c).

MicroPython only: `@micropython.viper` code cannot be imported by CPython. On
the board this module is the fallback for the C user module `gtkernel`
(native/mpy_module), which exposes the same `block` function; the unix port
runs this one in tests, where it must agree bit for bit with the C kernel.

block(buf, start, nsets, nch, state, out) -> number of sets consumed

* buf: bytearray of interleaved sets, nch u16 little-endian samples per set
  (channel 0 = V, 1..nch-1 = CTs, raw 12-bit ADC counts). Each sample is
  centred as x = raw - 2048.
* Processes sets start .. min(nsets, start + 256) - 1 (absolute set indices).
* state: array('i', STATE_LEN) (201 words): [0] v of the last consumed set
  (written only), [1] polarity (0 negative, 1 positive), [2] hysteresis in
  counts (set by the caller; negative acts as 0), [3] set to 1 if the call
  stopped at a rising crossing, else 0, [4] V history fill position
  (128..384, anything else reads as 128), [4+k] the V delays of CT k = 1..4
  in sets: D in bits 0..6 and Q in bits 8..14, and from word 9 the V history: 384 raw u16, oldest
  first, the 128 below the fill position being the V of the sets before the
  call. A call that might not fit (fill + sets > 384) first moves those 128
  to the front; it then appends its own V.
* A rising crossing (polarity 0 and v > hysteresis) sets polarity 1 and
  state[3] = 1 and returns without consuming that set; polarity 1 and
  v < -hysteresis sets polarity 0.
* out: array('i', 2 + 6 * (nch - 1)), overwritten: [0] sum v, [1] sum v*v,
  and per CT k (0-based) [2+6k] sum i, [3+6k] sum i*i, [4+6k] sum i*v_D,
  [5+6k] sum i*v_Q, [6+6k] sum v_D, [7+6k] sum v_Q, v_D being the v D sets
  before the CT's own set (real power; Q is about a quarter period more, for
  reactive power). With |x| <= 2048 and <= 256 sets every sum
  fits int32 (u16 values above 4095 give the sums modulo 2**32, like the C
  kernel).

accumulate(acc, out, n): acc[j] += out[j] for j < n, both array('i'), modulo
2**32 (the firmware's period sums; a period of at most 480 sets keeps them in
int32). ValueError if n exceeds either length.

Bad arguments (nch outside 2..5, negative start, buffers too short) raise
ValueError naming the argument. docs/kernel.md has the full contract.
"""

import micropython

MAX_SETS = 256
MIN_NCH = 2
MAX_NCH = 5
HIST_KEEP = 128
HIST_LEN = 384
HIST_WORD = 9
STATE_LEN = 201  # HIST_WORD + HIST_LEN // 2
FILL = 4
DELAY = 4  # state[DELAY + k] for CT k = 1..4: D | Q << 8
Q_SHIFT = 8
MAX_DELAY = 127
# len as a module global: viper looks a name up in the module's dict first, then in the
# builtins, which costs about 725 instructions a call on a Cortex-M0+ against 245 (three per
# block call, two per accumulate).
_len = len


@micropython.viper
def block(buf, start: int, nsets: int, nch: int, state, out) -> int:
    if nch < 2 or nch > 5:
        raise ValueError("kernel: nch must be 2..5")
    if start < 0:
        raise ValueError("kernel: start must be >= 0")
    if int(_len(state)) < 201:
        raise ValueError("kernel: state must hold 201 int32")
    if int(_len(out)) < 2 + 6 * (nch - 1):
        raise ValueError("kernel: out is too short for nch")
    stop = nsets
    if stop > start + 256:
        stop = start + 256
    avail = stop - start
    if avail < 0:
        avail = 0
    if avail > 0 and int(_len(buf)) < 2 * nch * stop:
        raise ValueError("kernel: buf holds fewer than nsets sets")
    b = ptr16(buf)  # noqa: F821 (viper built-in)
    st = ptr32(state)  # noqa: F821
    hs = ptr16(int(st))  # noqa: F821 (the history: u16 entry e is hs[18 + e]; a cast of an int costs nothing)
    o = ptr32(out)  # noqa: F821
    # A ptr32 load is zero-extended on a 64-bit host (the unix port) and
    # already signed on the 32-bit board: x - ((x & 2**31) << 1) is the signed
    # value on both (the shift wraps to 0 in 32 bits). m is built at run time
    # because 2**31 is not a small int on the board.
    m = 1
    m = m << 31
    st[3] = 0
    hyst = st[2]
    hyst = hyst - ((hyst & m) << 1)
    if hyst < 0:
        hyst = 0
    if hyst > 65535:
        hyst = 65535  # no sample passes it either way, as with any larger one (2048 + hyst stays small)
    w = st[4]
    w = w - ((w & m) << 1)
    if w < 128 or w > 384:
        w = 128
    if w + avail > 384:
        j = 0
        src = 18 + w - 128
        while j < 128:
            hs[18 + j] = hs[src + j]
            j += 1
        w = 128
    hw = 18 + w  # this call's first set goes to hs[hw]
    # The loops run in _sums, whose first two locals hold the samples (see there).
    n = int(_sums(0, 0, int(b) + 2 * start * nch, int(hs) + 2 * hw, int(st), int(o), avail, nch, hyst))
    if n > 0:
        st[0] = hs[hw + n - 1] - 2048
    st[4] = w + n
    return n


# Both passes over the block, on raw samples (r = x + 2048), their sums centred once at the
# end: sum(x) = sum(r) - 2048*n and sum(x*y) = sum(r*s) - 2048*(sum(r) + sum(s)) + 2048*2048*n,
# exact modulo 2**32 like the C kernel's int32 sums. Viper on armv6m (mpy-cross) keeps only a
# function's first two locals in registers and every other one on the stack, each use a load
# and a store or more; so the samples are the first two locals here, x and y (callers pass 0),
# the sums live on the stack, and the samples are read by walking pointers (addresses as ints,
# ptr16(p)[0]: one ldrh) rather than by index. On a Cortex-M0+ that is about half the
# instructions per V/I pair of the same loops in block itself (hardware/qemu-m0.md).
# smp: the address of the first set's V sample; hist: of its V history entry (hs[hw]);
# sta, ob: of state and out; avail: the most sets to take; hyst: 0..65535.
@micropython.viper
def _sums(x: int, y: int, smp: int, hist: int, sta: int, ob: int, avail: int, nch: int, hyst: int) -> int:
    st = ptr32(sta)  # noqa: F821 (viper built-in)
    step = nch << 1  # bytes from a sample to the same channel's in the next set
    hi = 2048 + hyst
    lo = 2048 - hyst
    pol = 0
    if st[1] != 0:
        pol = 1
    # Pass 1: x is V, y counts the sets left. The crossing rule, sum v and sum v*v, and V
    # appended to the history.
    pb = smp
    ph = hist
    s1 = 0
    s2 = 0
    y = avail
    while y:
        x = ptr16(pb)[0]  # noqa: F821
        if pol:
            if x < lo:
                pol = 0
        elif x > hi:
            pol = 1
            st[3] = 1
            break
        ptr16(ph)[0] = x  # noqa: F821
        s1 += x
        s2 = x * x + s2
        pb += step
        ph += 2
        y -= 1
    st[1] = pol
    n = avail - y
    nn = n << 11  # 2048 * n
    n2 = n << 22  # 2048 * 2048 * n
    o = ptr32(ob)  # noqa: F821
    o[0] = s1 - nn
    o[1] = s2 - (s1 << 12) + n2
    # Pass 2: one CT at a time over the n sets, x its current, y V from the history D sets
    # before it, then Q sets before it.
    po = ob + 8  # its six sums: out[2 + 6k] ...
    pd = sta + 20  # its delays: state[5 + k]
    pc = smp + 2  # its sample in the first set
    k = nch - 1  # CTs left
    while k:
        dw = ptr32(pd)[0]  # noqa: F821
        pv = hist - ((dw & 127) << 1)
        pq = hist - (((dw >> 8) & 127) << 1)
        pb = pc
        s1 = 0
        s2 = 0
        siv = 0
        sivq = 0
        svd = 0
        svq = 0
        c = n
        while c:
            x = ptr16(pb)[0]  # noqa: F821
            y = ptr16(pv)[0]  # noqa: F821
            s1 += x
            s2 = x * x + s2
            siv = x * y + siv
            svd += y
            y = ptr16(pq)[0]  # noqa: F821
            sivq = x * y + sivq
            svq += y
            pb += step
            pv += 2
            pq += 2
            c -= 1
        o = ptr32(po)  # noqa: F821
        o[0] = s1 - nn
        o[1] = s2 - (s1 << 12) + n2
        o[2] = siv - ((s1 + svd) << 11) + n2
        o[3] = sivq - ((s1 + svq) << 11) + n2
        o[4] = svd - nn
        o[5] = svq - nn
        po += 24
        pd += 4
        pc += 2
        k -= 1
    return n


@micropython.viper
def accumulate(acc, out, n: int):
    if n < 0 or n > int(_len(acc)) or n > int(_len(out)):
        raise ValueError("accumulate: n is outside both arrays")
    a = ptr32(acc)  # noqa: F821 (viper built-in)
    o = ptr32(out)  # noqa: F821
    j = 0
    while j < n:
        a[j] = a[j] + o[j]
        j += 1
