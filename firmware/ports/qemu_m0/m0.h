// The qemu_m0 port's own pieces: the instruction clock, GC timing and
// semihosting files (modm0.c).
#ifndef GRIDTAP_QEMU_M0_H
#define GRIDTAP_QEMU_M0_H
#include <stdint.h>
#include "py/obj.h"

void m0_clock_start(void);
uint64_t m0_instructions(void);
void m0_gc_begin(void);
void m0_gc_end(void);
mp_obj_t m0_file_open(size_t n_args, const mp_obj_t *args, mp_map_t *kwargs);
#endif
