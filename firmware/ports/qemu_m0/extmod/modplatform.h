// py/modsys.c includes extmod/modplatform.h unconditionally; the sdist has no
// extmod/ and this port has no `platform` module, so nothing is needed from it.
#ifndef GRIDTAP_QEMU_M0_MODPLATFORM_H
#define GRIDTAP_QEMU_M0_MODPLATFORM_H
#endif
