/* gridtap per-sample DSP kernel; contract in gt_kernel.h and docs/kernel.md.
 *
 * A sample is centred as x = raw - 2048.
 *
 * Overflow bound: for 12-bit raw counts (0..4095) a centred sample is
 * -2048..2047, so |x| <= 2^11 and every product |a*b| <= 2^22. At most
 * 256 = 2^8 sets per call, so every sum is at most 2^30 in magnitude (sum v at
 * most 2^19): all fit int32 with room to spare. A u16 above 4095 (not a 12-bit
 * count) still gives a defined result: the sums modulo 2^32, as in the viper
 * twin and the reference.
 *
 * Layout for the Cortex-M0+ (8 low registers, 1-cycle 32x32 multiplier, no
 * divide): one pass over V finds where the call stops (rising crossing or the
 * end), sums c and c*c and appends each V to the history; then one pass per CT
 * keeps its five sums and its delayed V in registers, instead of one pass over
 * sets that would need all 20 sums live at once. The loops sum the raw counts
 * r = x + 2048 (no subtraction per sample) and the centred sums are recovered
 * once per call with exact algebra in uint32_t arithmetic modulo 2^32: every
 * true result fits int32, so the modular result is the exact one. The same
 * modular arithmetic keeps raw values above 4095 and a garbage history
 * defined (they wrap, as the viper twin's 32-bit stores do) instead of
 * overflowing.
 *
 * The V history (GT_KERNEL_HIST_LEN u16 after the state header) is linear, not
 * a ring: the V of the sets before the call are the 128 entries below the fill
 * position w, the call appends its own from w on, and CT k reads v_D of set j
 * at h[w + j - D], one pointer walking one run with no wrap test per sample.
 * When a call might not fit (w + avail > 384) the last 128 entries are first
 * moved to the front: with 48-set blocks that is one 128-entry move every few
 * calls. The history is only ever accessed through a uint16_t pointer, the
 * header only through int32_t, so the two never alias.
 */
#include "gt_kernel.h"

#define M ((uint32_t)GT_KERNEL_MIDSCALE)

/* One CT over the sets p .. end (stride nch), with its two delayed Vs read
 * from the history: c = v_D at q[0] and cq = v_Q at q[off] (off = D - Q, in
 * entries; both runs advance one entry per set). Raw sums of a = i + 2048, of
 * a*a, of its products with c and with cq, and of c and cq, into acc[0..5].
 * GT_CT_PASS(nch, k) instantiates it with both as constants, so the CT sample
 * is an immediate-offset load and the stride an immediate add. */
#if defined(__ARM_ARCH_6M__) && defined(__GNUC__) && !defined(GT_KERNEL_PORTABLE)
/* The same loop in Thumb-1 for the Cortex-M0+ (gcc and clang): the six sums live in r6, r7
 * and the high registers r10, r11, r12 and lr, which `add rH, rL` reaches in one instruction,
 * so the loop is 16 instructions per set instead of the 35 clang makes of the C with its sums
 * spilled. r7 (a frame pointer in some builds) is saved and restored inside; r9 (the static
 * base of position-independent MicroPython native modules) is not touched. Same sums, modulo
 * 2^32, as the C loop: tests/native/test_kernel.py runs this build in unicorn against it. */
#define GT_STR2(x) #x
#define GT_STR(x) GT_STR2(x)
#define GT_CT_PASS(NCH, K)                                                            \
    static void gt_ct_pass_##NCH##_##K(const uint16_t *p, const uint16_t *end,      \
                                        const uint16_t *q, int32_t off, uint32_t *acc)  \
    {                                                                                 \
        register const uint16_t *rp __asm__("r0") = p;                               \
        register const uint16_t *rq __asm__("r1") = q;                               \
        register int32_t roff __asm__("r2") = off * 2;                               \
        register const uint16_t *rend __asm__("r3") = end;                           \
        register uint32_t *racc __asm__("r4") = acc;                                 \
        __asm__ volatile(                                                             \
            ".syntax unified\n\t" /* gcc's inline asm defaults to divided syntax */   \
            "push {r4, r7}\n\t"                                                       \
            "mov r8, r3\n\t"                                                          \
            "movs r6, #0\n\t"                                                         \
            "movs r7, #0\n\t"                                                         \
            "mov r10, r6\n\t"                                                         \
            "mov r11, r6\n\t"                                                         \
            "mov r12, r6\n\t"                                                         \
            "mov lr, r6\n\t"                                                          \
            "cmp r0, r8\n\t"                                                          \
            "beq 2f\n"                                                                \
            "1:\n\t"                                                                  \
            "ldrh r3, [r0, #(2*" GT_STR(K) ")]\n\t" /* a */                          \
            "ldrh r4, [r1]\n\t"                      /* c = v_D */                    \
            "ldrh r5, [r1, r2]\n\t"                  /* cq = v_Q */                   \
            "adds r6, r6, r3\n\t"                    /* sa */                         \
            "add r10, r4\n\t"                        /* scd */                        \
            "add r11, r5\n\t"                        /* scq */                        \
            "muls r4, r3, r4\n\t"                                                     \
            "adds r7, r7, r4\n\t"                    /* sac */                        \
            "muls r5, r3, r5\n\t"                                                     \
            "add r12, r5\n\t"                        /* saq */                        \
            "muls r3, r3, r3\n\t"                                                     \
            "add lr, r3\n\t"                         /* saa */                        \
            "adds r0, #(2*" GT_STR(NCH) ")\n\t"                                       \
            "adds r1, #2\n\t"                                                         \
            "cmp r0, r8\n\t"                                                          \
            "bne 1b\n"                                                                \
            "2:\n\t"                                                                  \
            "pop {r4}\n\t"                                                            \
            "str r6, [r4, #0]\n\t"                                                    \
            "mov r5, lr\n\t"                                                          \
            "str r5, [r4, #4]\n\t"                                                    \
            "str r7, [r4, #8]\n\t"                                                    \
            "mov r5, r12\n\t"                                                         \
            "str r5, [r4, #12]\n\t"                                                   \
            "mov r5, r10\n\t"                                                         \
            "str r5, [r4, #16]\n\t"                                                   \
            "mov r5, r11\n\t"                                                         \
            "str r5, [r4, #20]\n\t"                                                   \
            "pop {r7}\n\t"                                                            \
            : "+r"(rp), "+r"(rq), "+r"(roff), "+r"(rend), "+r"(racc)                  \
            :                                                                         \
            : "r5", "r6", "r8", "r10", "r11", "r12", "lr", "cc", "memory");          \
    }
#else
#define GT_CT_PASS(NCH, K)                                                            \
    static void gt_ct_pass_##NCH##_##K(const uint16_t *p, const uint16_t *end,      \
                                        const uint16_t *q, int32_t off, uint32_t *acc)  \
    {                                                                                 \
        uint32_t sa = 0;                                                              \
        uint32_t saa = 0;                                                             \
        uint32_t sac = 0;                                                             \
        uint32_t saq = 0;                                                             \
        uint32_t scd = 0;                                                             \
        uint32_t scq = 0;                                                             \
        for (; p != end; p += (NCH), q++) {                                           \
            uint32_t c = q[0];                                                        \
            uint32_t cq = q[off];                                                     \
            uint32_t a = p[(K)];                                                      \
            sa += a;                                                                  \
            scd += c;                                                                 \
            scq += cq;                                                                \
            sac += a * c;                                                             \
            saq += a * cq;                                                            \
            saa += a * a;                                                             \
        }                                                                             \
        acc[0] = sa;                                                                  \
        acc[1] = saa;                                                                 \
        acc[2] = sac;                                                                 \
        acc[3] = saq;                                                                 \
        acc[4] = scd;                                                                 \
        acc[5] = scq;                                                                 \
    }
#endif

GT_CT_PASS(2, 1)
GT_CT_PASS(3, 1)
GT_CT_PASS(3, 2)
GT_CT_PASS(4, 1)
GT_CT_PASS(4, 2)
GT_CT_PASS(4, 3)
GT_CT_PASS(5, 1)
GT_CT_PASS(5, 2)
GT_CT_PASS(5, 3)
GT_CT_PASS(5, 4)

static void gt_ct_pass(const uint16_t *p, const uint16_t *end, uint32_t nch, uint32_t k,
                       const uint16_t *q, int32_t off, uint32_t *acc)
{
    switch (nch * 8u + k) {
    case 2 * 8 + 1: gt_ct_pass_2_1(p, end, q, off, acc); break;
    case 3 * 8 + 1: gt_ct_pass_3_1(p, end, q, off, acc); break;
    case 3 * 8 + 2: gt_ct_pass_3_2(p, end, q, off, acc); break;
    case 4 * 8 + 1: gt_ct_pass_4_1(p, end, q, off, acc); break;
    case 4 * 8 + 2: gt_ct_pass_4_2(p, end, q, off, acc); break;
    case 4 * 8 + 3: gt_ct_pass_4_3(p, end, q, off, acc); break;
    case 5 * 8 + 1: gt_ct_pass_5_1(p, end, q, off, acc); break;
    case 5 * 8 + 2: gt_ct_pass_5_2(p, end, q, off, acc); break;
    case 5 * 8 + 3: gt_ct_pass_5_3(p, end, q, off, acc); break;
    default: gt_ct_pass_5_4(p, end, q, off, acc); break;
    }
}

uint32_t gt_kernel_block(const uint16_t *buf, uint32_t start, uint32_t nsets, uint32_t nch,
                         int32_t *state, int32_t *out)
{
    uint32_t avail;
    uint32_t left;
    uint32_t n;
    uint32_t k;
    uint32_t pol;
    uint32_t lo;
    uint32_t hi;
    uint32_t w;
    uint32_t sc = 0;
    uint32_t scc = 0;
    uint32_t nmm;
    int32_t hyst;
    uint32_t acc[6];
    const uint16_t *set0;
    const uint16_t *p;
    uint16_t *hist;
    uint16_t *h;

    state[GT_KERNEL_STOP] = 0;
    if (nch < GT_KERNEL_MIN_NCH || nch > GT_KERNEL_MAX_NCH) {
        return 0;
    }
    avail = nsets > start ? nsets - start : 0u;
    if (avail > GT_KERNEL_MAX_SETS) {
        avail = GT_KERNEL_MAX_SETS;
    }
    hyst = state[GT_KERNEL_HYST];
    if (hyst < 0) {
        hyst = 0;
    }
    /* With c = v + 2048: v > hyst <=> c > hi, v < -hyst <=> c < lo. c is never
     * below 0, so a hysteresis of 2048 or more can never be fallen through. */
    hi = M + (uint32_t)hyst;
    lo = (uint32_t)hyst >= M ? 0u : M - (uint32_t)hyst;
    set0 = buf + start * nch;

    /* The history: make room for avail more entries behind the 128 kept. */
    hist = (uint16_t *)(void *)(state + GT_KERNEL_HIST_WORD);
    w = (uint32_t)state[GT_KERNEL_FILL];
    if (w < GT_KERNEL_HIST_KEEP || w > GT_KERNEL_HIST_LEN) {
        w = GT_KERNEL_HIST_KEEP;
    }
    if (w + avail > GT_KERNEL_HIST_LEN) {
        const uint16_t *src = hist + (w - GT_KERNEL_HIST_KEEP);
        for (k = 0; k < GT_KERNEL_HIST_KEEP; k++) {
            hist[k] = src[k];
        }
        w = GT_KERNEL_HIST_KEEP;
    }

    /* Pass 1: V alone. Find where the call stops, sum c and c*c, append c to
     * the history. One loop per polarity, so each set costs a single compare
     * for the crossing rule. */
    p = set0;
    h = hist + w;
    left = avail;
    pol = state[GT_KERNEL_POL] != 0;
    if (pol) {
        for (; left != 0; left--, p += nch) {
            uint32_t c = p[0];
            if (c < lo) {
                pol = 0; /* this set is consumed by the loop below */
                break;
            }
            *h++ = (uint16_t)c;
            sc += c;
            scc += c * c;
        }
    }
    if (!pol) {
        for (; left != 0; left--, p += nch) {
            uint32_t c = p[0];
            if (c > hi) {
                pol = 1;
                state[GT_KERNEL_STOP] = 1; /* the crossing set starts the next period */
                break;
            }
            *h++ = (uint16_t)c;
            sc += c;
            scc += c * c;
        }
    }
    state[GT_KERNEL_POL] = (int32_t)pol;
    n = avail - left;

    /* Back from raw to centred sums, modulo 2^32 (exact: the true values fit
     * int32). With x = r - M:  sum x = sum r - nM,  sum x*x = sum r*r - 2M sum r + nMM,
     * sum x*y = sum r*s - M sum r - M sum s + nMM. */
    nmm = n * M * M;
    out[0] = (int32_t)(sc - n * M);
    out[1] = (int32_t)(scc - 2u * M * sc + nmm);

    /* Pass 2: one CT at a time over the n consumed sets. */
    for (k = 1; k < nch; k++) {
        int32_t *o = out + 6u * k - 4u;
        uint32_t dw = (uint32_t)state[GT_KERNEL_DELAY + k];
        uint32_t d = dw & GT_KERNEL_DELAY_MASK;
        uint32_t dq = (dw >> GT_KERNEL_QDELAY_SHIFT) & GT_KERNEL_DELAY_MASK;
        acc[0] = acc[1] = acc[2] = acc[3] = acc[4] = acc[5] = 0;
        if (n > 0) {
            gt_ct_pass(set0, p, nch, k, hist + (w - d), (int32_t)d - (int32_t)dq, acc);
        }
        o[0] = (int32_t)(acc[0] - n * M);
        o[1] = (int32_t)(acc[1] - 2u * M * acc[0] + nmm);
        o[2] = (int32_t)(acc[2] - M * acc[0] - M * acc[4] + nmm);
        o[3] = (int32_t)(acc[3] - M * acc[0] - M * acc[5] + nmm);
        o[4] = (int32_t)(acc[4] - n * M);
        o[5] = (int32_t)(acc[5] - n * M);
    }
    if (n > 0) {
        state[GT_KERNEL_VLAST] = (int32_t)hist[w + n - 1u] - GT_KERNEL_MIDSCALE;
    }
    state[GT_KERNEL_FILL] = (int32_t)(w + n);
    return n;
}
