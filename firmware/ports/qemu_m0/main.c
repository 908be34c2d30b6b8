// gridtap's MicroPython port for a Cortex-M0 under QEMU (-M microbit).
//
// Boot: read the semihosting command line
//     <prog> [--code-in-heap] <path>[:<path>...] <module> [args...]
// put the paths on sys.path and [prog, args...] in sys.argv, then import
// <module>. Modules (.mpy from mpy-cross -march=armv6m) are read from the
// host's file system through semihosting; there is no flash file system.
// stdout goes to the semihosting console; the exit status is the program's.
//
// Where a module's code lives: by default each .mpy is copied once into a
// flash stand-in outside the GC heap (M0_XIP_*, RAM that QEMU adds above the
// Pico's 256 KB) and loaded from there as MicroPython loads a ROMFS image or
// frozen code on a Pico: bytecode, qstrs and constant strings stay where they
// are, only the small code objects go on the heap. So the collector neither
// marks nor sweeps ~45 KB of bytecode (hardware/qemu-m0.md). --code-in-heap
// loads every module into the heap instead, as copying .mpy files onto the
// Pico's littlefs would.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <semihost.h>

#include "py/builtin.h"
#include "py/compile.h"
#include "py/cstack.h"
#include "py/gc.h"
#include "py/mperrno.h"
#include "py/mphal.h"
#include "py/reader.h"
#include "py/runtime.h"
#include "shared/runtime/gchelper.h"
#include "m0.h"

#define CMDLINE_MAX 1024
#define ARGS_MAX 16

// The RP2040 image's free RAM: the stock rp2 port's micropython.mem_info()
// reports a GC heap ("GC: total") of about 192,000 bytes on a Pico; 192 KiB
// here gives the same after the allocation tables (hardware/qemu-m0.md). The
// stack is 8 KB, as the linker reserves it (__stack_size).
#ifndef M0_HEAP_BYTES
#define M0_HEAP_BYTES (192 * 1024)
#endif
#define M0_STACK_BYTES (8 * 1024)

static uint32_t heap[M0_HEAP_BYTES / 4];

// The flash stand-in for module images: above the linker's 256 KB of RAM
// (__ram_size), in the extra RAM qemu_m0.MACHINE gives the micro:bit.
// Module images fill it from the bottom, native/viper machine code from the
// top (m0_alloc_exec); neither is ever freed, as in a flash image.
#define M0_XIP_BASE (0x20000000u + 256u * 1024u)
#define M0_XIP_BYTES (64u * 1024u)
static size_t xip_used;
static size_t exec_used;
static bool code_in_heap;
static char cmdline[CMDLINE_MAX];
static int console = -1;

mp_uint_t mp_hal_stdout_tx_strn(const char *str, size_t len) {
    if (console < 0) {
        console = sys_semihost_open(":tt", 4);  // "w": the host's stdout
    }
    if (console >= 0 && len) {
        sys_semihost_write(console, str, len);
    }
    return len;
}

int mp_hal_stdin_rx_chr(void) {
    return -1;  // no console input: the firmware never reads it
}

// -- modules from the host's file system ------------------------------------

static int semi_open_rb(const char *path) {
    int fd = sys_semihost_open(path, 1);  // "rb"
    return fd;
}

static bool semi_exists(const char *path) {
    int fd = semi_open_rb(path);
    if (fd < 0) {
        return false;
    }
    sys_semihost_close(fd);
    return true;
}

mp_import_stat_t mp_import_stat(const char *path) {
    size_t n = strlen(path);
    if ((n > 3 && strcmp(path + n - 3, ".py") == 0) || (n > 4 && strcmp(path + n - 4, ".mpy") == 0)) {
        return semi_exists(path) ? MP_IMPORT_STAT_FILE : MP_IMPORT_STAT_NO_EXIST;
    }
    // semihosting cannot stat a directory: a package is a directory with __init__
    char buf[MICROPY_ALLOC_PATH_MAX + 16];
    if (n + 14 > sizeof(buf)) {
        return MP_IMPORT_STAT_NO_EXIST;
    }
    memcpy(buf, path, n);
    strcpy(buf + n, "/__init__.mpy");
    if (semi_exists(buf)) {
        return MP_IMPORT_STAT_DIR;
    }
    strcpy(buf + n, "/__init__.py");
    return semi_exists(buf) ? MP_IMPORT_STAT_DIR : MP_IMPORT_STAT_NO_EXIST;
}

void mp_reader_new_file(mp_reader_t *reader, qstr filename) {
    int fd = semi_open_rb(qstr_str(filename));
    if (fd < 0) {
        mp_raise_OSError(MP_ENOENT);
    }
    intptr_t len = sys_semihost_flen(fd);
    if (len < 0) {
        sys_semihost_close(fd);
        mp_raise_OSError(MP_EIO);
    }
    size_t n = (size_t)len;
    size_t n_xip = (n + 3u) & ~3u;
    bool rom = !code_in_heap && n_xip <= M0_XIP_BYTES - xip_used - exec_used;
    byte *data = rom ? (byte *)(M0_XIP_BASE + xip_used) : m_new(byte, n ? n : 1);
    uintptr_t missing = sys_semihost_read(fd, data, n);
    sys_semihost_close(fd);
    if (missing) {
        if (!rom) {
            m_del(byte, data, n ? n : 1);
        }
        mp_raise_OSError(MP_EIO);
    }
    if (rom) {
        xip_used += n_xip;  // kept for ever, like an image in flash
        mp_reader_new_mem(reader, data, n, MP_READER_IS_ROM);
    } else {
        mp_reader_new_mem(reader, data, n, n);  // the reader frees data when done
    }
}

// -- native and viper machine code (MP_PLAT_ALLOC_EXEC) ----------------------
//
// A Pico image with frozen native code keeps that code in flash, where the
// collector never looks. MicroPython's default puts it on the GC heap, where
// every collection would mark its blocks and scan its bytes for pointers
// (~0.2 ms for power.py's 4.6 KiB). So it goes to the top of the flash
// stand-in. The port defines MP_PLAT_ALLOC_EXEC, which makes py/ track the
// viper rodata/bss as roots (mpconfigport.h), since the collector does not
// see their addresses inside code outside the heap. With --code-in-heap (a
// .mpy on littlefs) or a full stand-in it goes on the heap as on a stock rp2.

static bool in_xip(const void *p) {
    uintptr_t a = (uintptr_t)p;
    return a >= M0_XIP_BASE && a < M0_XIP_BASE + M0_XIP_BYTES;
}

void *m0_alloc_exec(size_t min_size, size_t *size) {
    size_t n = (min_size + 3u) & ~(size_t)3u;
    if (!code_in_heap && n <= M0_XIP_BYTES - xip_used - exec_used) {
        exec_used += n;
        *size = n;
        return (void *)(M0_XIP_BASE + M0_XIP_BYTES - exec_used);
    }
    *size = min_size;
    return m_new(byte, min_size);
}

void m0_free_exec(void *ptr, size_t size) {
    if (!in_xip(ptr)) {
        m_del(byte, ptr, size);
    } else if ((uintptr_t)ptr == M0_XIP_BASE + M0_XIP_BYTES - exec_used) {
        exec_used -= size;  // the compiler's last attempt: give it back
    }
}

mp_lexer_t *mp_lexer_new_from_file(qstr filename) {
    mp_reader_t reader;
    mp_reader_new_file(&reader, filename);
    return mp_lexer_new(filename, reader);
}

mp_obj_t mp_builtin_open(size_t n_args, const mp_obj_t *args, mp_map_t *kwargs) {
    return m0_file_open(n_args, args, kwargs);
}
MP_DEFINE_CONST_FUN_OBJ_KW(mp_builtin_open_obj, 1, mp_builtin_open);

// -- garbage collection, timed -----------------------------------------------

void gc_collect(void) {
    m0_gc_begin();
    gc_collect_start();
    gc_helper_collect_regs_and_stack();
    gc_collect_end();
    m0_gc_end();
}

// -- boot ----------------------------------------------------------------------

static int split(char *s, char **argv) {
    int n = 0;
    while (*s && n < ARGS_MAX) {
        while (*s == ' ') {
            *s++ = 0;
        }
        if (!*s) {
            break;
        }
        argv[n++] = s;
        while (*s && *s != ' ') {
            s++;
        }
    }
    return n;
}

static void add_paths(char *paths) {
    mp_obj_list_t *sys_path = MP_OBJ_TO_PTR(mp_sys_path);
    (void)sys_path;
    char *p = paths;
    while (*p) {
        char *end = strchr(p, ':');
        size_t n = end ? (size_t)(end - p) : strlen(p);
        mp_obj_list_append(mp_sys_path, mp_obj_new_str(p, n));
        if (!end) {
            break;
        }
        p = end + 1;
    }
}

static int run(int argc, char **argv) {
    if (argc > 3 && strcmp(argv[1], "--code-in-heap") == 0) {
        code_in_heap = true;
        argv[1] = argv[0];
        argv++;
        argc--;
    }
    mp_obj_list_init(MP_OBJ_TO_PTR(mp_sys_path), 0);
    mp_obj_list_init(MP_OBJ_TO_PTR(mp_sys_argv), 0);
    add_paths(argv[1]);
    mp_obj_list_append(mp_sys_argv, mp_obj_new_str(argv[0], strlen(argv[0])));
    for (int i = 3; i < argc; i++) {
        mp_obj_list_append(mp_sys_argv, mp_obj_new_str(argv[i], strlen(argv[i])));
    }
    nlr_buf_t nlr;
    if (nlr_push(&nlr) == 0) {
        qstr mod = qstr_from_str(argv[2]);
        mp_import_name(mod, mp_const_none, MP_OBJ_NEW_SMALL_INT(0));
        nlr_pop();
        return 0;
    }
    mp_obj_t exc = MP_OBJ_FROM_PTR(nlr.ret_val);
    if (mp_obj_is_subclass_fast(MP_OBJ_FROM_PTR(mp_obj_get_type(exc)), MP_OBJ_FROM_PTR(&mp_type_SystemExit))) {
        mp_obj_t code = mp_obj_exception_get_value(exc);
        return code == mp_const_none ? 0 : mp_obj_get_int(code);
    }
    mp_obj_print_exception(&mp_plat_print, exc);
    return 1;
}

int main(void) {
    m0_clock_start();
    mp_cstack_init_with_sp_here(M0_STACK_BYTES - 512);
    gc_init(heap, (char *)heap + sizeof(heap));
    mp_init();
    char *argv[ARGS_MAX];
    int argc = 0;
    if (sys_semihost_get_cmdline(cmdline, sizeof(cmdline)) == 0) {
        argc = split(cmdline, argv);
    }
    int status;
    if (argc < 3) {
        mp_printf(&mp_plat_print, "usage: <prog> [--code-in-heap] <path>[:<path>...] <module> [args...] (semihosting)\n");
        status = 2;
    } else {
        status = run(argc, argv);
    }
    mp_deinit();
    exit(status);
}

void nlr_jump_fail(void *val) {
    mp_printf(&mp_plat_print, "FATAL: uncaught NLR %p\n", val);
    exit(3);
}

void NORETURN __fatal_error(const char *msg) {
    mp_printf(&mp_plat_print, "FATAL: %s\n", msg);
    exit(3);
}

#ifndef NDEBUG
void MP_WEAK __assert_func(const char *file, int line, const char *func, const char *expr) {
    mp_printf(&mp_plat_print, "Assertion '%s' failed, at file %s:%d\n", expr, file, line);
    __fatal_error("Assertion failed");
}
#endif
