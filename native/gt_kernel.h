/* gridtap per-sample DSP kernel (C99, no allocation, fixed-width integer maths).
 *
 * One call consumes up to GT_KERNEL_MAX_SETS interleaved sample sets (channel 0
 * = V, channels 1..nch-1 = CTs, raw 12-bit ADC counts) and returns the sums the
 * firmware core folds into its per-period accumulators. A call stops early, at
 * a rising zero crossing of V, without consuming the crossing set.
 * The full contract is in docs/kernel.md; firmware/gridtap_fw/kernel.py is the
 * MicroPython viper twin and both give bit-identical results.
 */
#ifndef GT_KERNEL_H
#define GT_KERNEL_H

#include <stdint.h>

#define GT_KERNEL_MAX_SETS 256u /* sets per call: keeps every sum inside int32 */
#define GT_KERNEL_MIN_NCH 2u    /* V + 1 CT */
#define GT_KERNEL_MAX_NCH 5u    /* V + 4 CT */
#define GT_KERNEL_MIDSCALE 2048 /* x = raw - 2048 */
#define GT_KERNEL_OUT_LEN(nch) (2u + 4u * ((nch) - 1u))

/* state[] layout */
#define GT_KERNEL_VPREV 0 /* centred v of the last consumed set */
#define GT_KERNEL_POL 1   /* 0 negative half-cycle, 1 positive */
#define GT_KERNEL_HYST 2  /* hysteresis in counts, set by the caller; negative acts as 0 */
#define GT_KERNEL_STOP 3  /* 1 if the call stopped at a rising crossing */

/* Process sets start .. min(nsets, start + 256) - 1 of buf (nch u16 per set).
 * out[0] = sum v, out[1] = sum v*v, and for CT k (0-based):
 * out[2+4k] = sum i, out[3+4k] = sum i*i, out[4+4k] = sum i*v,
 * out[5+4k] = sum i*v_prev. out is overwritten (2 + 4*(nch-1) words).
 * Returns the number of sets consumed. An nch outside 2..5 consumes nothing:
 * the call returns 0, clears state[3] and leaves out untouched. */
uint32_t gt_kernel_block(const uint16_t *buf, uint32_t start, uint32_t nsets, uint32_t nch,
                         int32_t *state, int32_t *out);

#endif
