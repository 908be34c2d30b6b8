/* See gtkernel_args.h. */
#include "gtkernel_args.h"

#include "gt_kernel.h"

const char *gtkernel_check_args(uintptr_t buf_addr, size_t buf_bytes, intptr_t start, intptr_t nsets,
                                intptr_t nch, uintptr_t state_addr, size_t state_bytes,
                                uintptr_t out_addr, size_t out_bytes)
{
    intptr_t stop;

    if (nch < (intptr_t)GT_KERNEL_MIN_NCH || nch > (intptr_t)GT_KERNEL_MAX_NCH) {
        return "kernel: nch must be 2..5";
    }
    if (start < 0) {
        return "kernel: start must be >= 0";
    }
    if (state_bytes < GT_KERNEL_STATE_LEN * sizeof(int32_t)) {
        return "kernel: state must hold 201 int32";
    }
    if (out_bytes < GT_KERNEL_OUT_LEN((size_t)nch) * sizeof(int32_t)) {
        return "kernel: out is too short for nch";
    }
    /* stop = min(nsets, start + 256) without overflowing start + 256 */
    stop = nsets;
    if (start <= INTPTR_MAX - (intptr_t)GT_KERNEL_MAX_SETS && stop > start + (intptr_t)GT_KERNEL_MAX_SETS) {
        stop = start + (intptr_t)GT_KERNEL_MAX_SETS;
    }
    if (stop > start && (size_t)stop > buf_bytes / (2u * (size_t)nch)) {
        return "kernel: buf holds fewer than nsets sets";
    }
    if ((buf_addr & 1u) != 0) {
        return "kernel: buf must be 2-byte aligned";
    }
    if (((state_addr | out_addr) & 3u) != 0) {
        return "kernel: state and out must be 4-byte aligned";
    }
    return NULL;
}
