// HAL of the qemu_m0 port: stdout over semihosting; no pins (see main.c).
#include <stdint.h>

#define mp_hal_pin_obj_t int   // no virtual pins: keeps extmod/virtpin.h out
static inline void mp_hal_set_interrupt_char(int c) {
    (void)c;
}
