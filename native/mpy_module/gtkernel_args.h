/* Argument checks for the gtkernel MicroPython module, kept free of MicroPython
 * headers so that the host tests can call them through cffi. */
#ifndef GTKERNEL_ARGS_H
#define GTKERNEL_ARGS_H

#include <stddef.h>
#include <stdint.h>

/* NULL if gt_kernel_block may be called with these buffers and integers,
 * else the message for ValueError (the same text the viper kernel raises).
 * Sizes are in bytes; addresses only matter for alignment (the M0+ faults on
 * unaligned halfword and word accesses). */
const char *gtkernel_check_args(uintptr_t buf_addr, size_t buf_bytes, intptr_t start, intptr_t nsets,
                                intptr_t nch, uintptr_t state_addr, size_t state_bytes,
                                uintptr_t out_addr, size_t out_bytes);

#endif
