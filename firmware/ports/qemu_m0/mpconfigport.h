// MicroPython configuration of gridtap's Cortex-M0 port under QEMU (-M microbit).
//
// Feature level, long ints, single-precision floats and the Thumb (armv6-m)
// native/viper emitter as the stock rp2 port has them, so the firmware's
// bytecode, viper kernel, floats and heap behave as on a Raspberry Pi Pico.
// GRIDTAP_M0_DOUBLE=1 builds the double-precision variant the unix port
// matches bit for bit (hardware/qemu-m0.md says why there are two).
#include <stddef.h>
#include <stdint.h>
#include <alloca.h>

#define MICROPY_CONFIG_ROM_LEVEL (MICROPY_CONFIG_ROM_LEVEL_EXTRA_FEATURES)

// The Thumb-1 emitters: viper and native code for armv6-m, as on the RP2040.
#define MICROPY_EMIT_THUMB (1)
#define MICROPY_EMIT_THUMB_ARMV7M (0)
#define MICROPY_EMIT_INLINE_THUMB (1)
#define MICROPY_PERSISTENT_CODE_LOAD (1)
#define MICROPY_PERSISTENT_CODE_LOAD_NATIVE (1)
// Modules loaded from memory-mapped images (ROMFS on a Pico) keep their
// bytecode, qstrs and strings in place, off the GC heap (main.c); the ROMFS
// file system itself (extmod) is not part of this port.
#define MICROPY_VFS_ROM (1)
#define MICROPY_VFS_ROM_IOCTL (0)
// Code addresses called through a pointer need the Thumb bit, or the first
// call into viper code faults.
#define MICROPY_MAKE_POINTER_CALLABLE(p) ((void *)((mp_uint_t)(p) | 1))
// Native and viper machine code goes outside the GC heap, to the flash
// stand-in (main.c, m0_alloc_exec), as frozen native code stays in a Pico's
// flash; the heap is its fallback (--code-in-heap). py/ then tracks the viper
// rodata/bss as roots; the code itself is tracked too, for the heap fallback
// (a pointer outside the heap costs the collector nothing).
void *m0_alloc_exec(size_t min_size, size_t *size);
void m0_free_exec(void *ptr, size_t size);
#define MP_PLAT_ALLOC_EXEC(min_size, ptr, size) (*(ptr) = m0_alloc_exec((min_size), (size)))
#define MP_PLAT_FREE_EXEC(ptr, size) m0_free_exec((ptr), (size))
#define MICROPY_PERSISTENT_CODE_TRACK_FUN_DATA (1)
#define MICROPY_PERSISTENT_CODE_TRACK_BSS_RODATA (1)

// As the rp2 port builds it (ports/rp2/mpconfigport.h): computed-goto bytecode
// dispatch, 1-byte qstr hashes, 16-bit GC mark stack entries.
#define MICROPY_OPT_COMPUTED_GOTO (1)
#define MICROPY_QSTR_BYTES_IN_HASH (1)
#define MICROPY_GC_STACK_ENTRY_TYPE uint16_t
#define MICROPY_STACK_CHECK_MARGIN (256)
#define MICROPY_ENABLE_EMERGENCY_EXCEPTION_BUF (1)

#define MICROPY_ENABLE_COMPILER (1)
#define MICROPY_ENABLE_GC (1)
#define MICROPY_ENABLE_EXTERNAL_IMPORT (1)
#define MICROPY_READER_VFS (0)
#define MICROPY_HAS_FILE_READER (1)  // mp_reader_new_file over semihosting (main.c)
#define MICROPY_VFS (0)
#define MICROPY_HELPER_REPL (0)
#define MICROPY_KBD_EXCEPTION (0)
#define MICROPY_STACK_CHECK (1)
#define MICROPY_LONGINT_IMPL (MICROPY_LONGINT_IMPL_MPZ)
#if GRIDTAP_M0_DOUBLE
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_DOUBLE)
#else
#define MICROPY_FLOAT_IMPL (MICROPY_FLOAT_IMPL_FLOAT)
#endif
#define MICROPY_ERROR_REPORTING (MICROPY_ERROR_REPORTING_NORMAL)

// What the firmware and its HAL use; nothing from extmod/ (not in the sdist).
#define MICROPY_PY_BUILTINS_INPUT (0)
#define MICROPY_PY_SYS_PATH (1)
#define MICROPY_PY_SYS_ARGV (1)
#define MICROPY_PY_SYS_STDFILES (0)
#define MICROPY_PY_SYS_PLATFORM "qemu_m0"
#define MICROPY_PY_PLATFORM (0)
#define MICROPY_PY_IO (0)
#define MICROPY_PY_OS (0)
#define MICROPY_PY_TIME (0)
#define MICROPY_PY_MACHINE (0)
#define MICROPY_PY_SELECT (0)
#define MICROPY_PY_JSON (0)
#define MICROPY_PY_RE (0)
#define MICROPY_PY_HEAPQ (0)
#define MICROPY_PY_RANDOM (0)
#define MICROPY_PY_DEFLATE (0)
#define MICROPY_PY_HASHLIB (0)
#define MICROPY_PY_BINASCII (0)
#define MICROPY_PY_UCTYPES (0)
#define MICROPY_PY_FRAMEBUF (0)
#define MICROPY_PY_ASYNCIO (0)
#define MICROPY_PY_THREAD (0)
#define MICROPY_PY_CMATH (0)
#define MICROPY_PY_MICROPYTHON_MEM_INFO (1)
#define MICROPY_PY_ARRAY (1)
#define MICROPY_PY_STRUCT (1)
#define MICROPY_PY_MATH (1)
#define MICROPY_PY_GC (1)
#define MICROPY_PY_ERRNO (1)

#define MICROPY_HW_BOARD_NAME "gridtap qemu_m0 (QEMU microbit)"
#define MICROPY_HW_MCU_NAME "Cortex-M0"

#define MICROPY_ALLOC_PATH_MAX (256)  // rp2: 128; the host's temporary paths are longer
#define MP_SSIZE_MAX (0x7fffffff)

typedef intptr_t mp_int_t;
typedef uintptr_t mp_uint_t;
typedef long mp_off_t;

#define MP_STATE_PORT MP_STATE_VM
