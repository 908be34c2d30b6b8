/* gridtap per-sample DSP kernel (C99, no allocation, fixed-width integer maths).
 *
 * One call consumes up to GT_KERNEL_MAX_SETS interleaved sample sets (channel 0
 * = V, channels 1..nch-1 = CTs, raw 12-bit ADC counts) and returns the sums the
 * firmware core folds into its per-period accumulators. A call stops early, at
 * a rising zero crossing of V, without consuming the crossing set.
 * Each CT is referred to V delayed by a whole number of sets D (its own, 0..127,
 * from a V history kept in the state): a CT on another line of a three-phase
 * supply sees its own phase's voltage as the VT's delayed by a third of a cycle.
 * A second delay Q per CT (about a quarter period more) gives the sums of
 * reactive power: current correlated with V a quarter of a cycle later.
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
#define GT_KERNEL_OUT_LEN(nch) (2u + 6u * ((nch) - 1u))

/* V history: raw u16 V samples, oldest first, in the state after the header.
 * The last GT_KERNEL_HIST_KEEP entries before the fill position are the V of
 * the sets before the call (age 1 = the previous set); a call appends its own
 * V behind them and reads each CT's delayed V from one linear run. */
#define GT_KERNEL_HIST_KEEP 128u /* ages 1..128 kept: D, Q <= 127 */
#define GT_KERNEL_HIST_LEN (GT_KERNEL_HIST_KEEP + GT_KERNEL_MAX_SETS) /* 384 u16 */
#define GT_KERNEL_DELAY_MASK 127u /* D = state[GT_KERNEL_DELAY + k] & 127 */
#define GT_KERNEL_QDELAY_SHIFT 8u /* Q = (state[GT_KERNEL_DELAY + k] >> 8) & 127 */

/* state[] layout (int32 words) */
#define GT_KERNEL_VLAST 0 /* centred v of the last consumed set (written, never read) */
#define GT_KERNEL_POL 1   /* 0 negative half-cycle, 1 positive */
#define GT_KERNEL_HYST 2  /* hysteresis in counts, set by the caller; negative acts as 0 */
#define GT_KERNEL_STOP 3  /* 1 if the call stopped at a rising crossing */
#define GT_KERNEL_FILL 4  /* history fill position, 128..384 (anything else reads as 128) */
#define GT_KERNEL_DELAY 4 /* state[4 + k]: CT k = 1..4's V delays in sets: D in bits 0..6, Q in 8..14 */
#define GT_KERNEL_HIST_WORD 9 /* the history's 384 u16 start at this word */
#define GT_KERNEL_STATE_LEN (GT_KERNEL_HIST_WORD + GT_KERNEL_HIST_LEN / 2u) /* 201 int32 */

/* Process sets start .. min(nsets, start + 256) - 1 of buf (nch u16 per set).
 * out[0] = sum v, out[1] = sum v*v, and for CT k (0-based) with delays D, Q:
 * out[2+6k] = sum i, out[3+6k] = sum i*i, out[4+6k] = sum i*v_D,
 * out[5+6k] = sum i*v_Q, out[6+6k] = sum v_D, out[7+6k] = sum v_Q,
 * where v_D is the v of the set D sets before the CT's own. out is
 * overwritten (2 + 6*(nch-1) words). Returns the number of sets consumed.
 * An nch outside 2..5 consumes nothing: the call returns 0, clears state[3]
 * and leaves the rest of state and out untouched. */
uint32_t gt_kernel_block(const uint16_t *buf, uint32_t start, uint32_t nsets, uint32_t nch,
                         int32_t *state, int32_t *out);

#endif
