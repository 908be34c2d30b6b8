// The `m0` module: what the Cortex-M0 port adds for the HAL and the budget.
//
//   m0.icount()       instructions executed so far, modulo 2**30 (a small int:
//                     no heap, so timing does not disturb the garbage collector)
//   m0.instructions() the same, unbounded
//   m0.gc_stats()     (collections, instructions in all of them, longest one,
//                      largest live heap after a collection, heap size,
//                      longest one since the last call)
//   m0.File(path, mode)  a host file or FIFO over semihosting: readinto(buf)
//                     fills buf unless the file ends, write(buf) writes it all
//
// The clock: with `qemu-system-arm -icount shift=0` the virtual clock advances
// 1 ns per guest instruction, and the nRF51's TIMER0 counts it at 16 MHz, so
// one tick is 62.5 instructions. The count is extended to 64 bits here. Time
// spent measuring the heap after a collection (gc_info walks the allocation
// table) is taken out of the clock, so it counts against nothing.
#include <string.h>
#include <semihost.h>

#include "py/gc.h"
#include "py/mperrno.h"
#include "py/objtuple.h"
#include "py/runtime.h"
#include "py/stream.h"
#include "m0.h"

#define TIMER0 0x40008000u
#define REG(off) (*(volatile uint32_t *)(TIMER0 + (off)))
#define T_START 0x000
#define T_CLEAR 0x00C
#define T_CAPTURE0 0x040
#define T_CC0 0x540
#define T_MODE 0x504
#define T_BITMODE 0x508
#define T_PRESCALER 0x510
#define TICKS_MASK 0x3FFFFFFFu

static uint32_t last_raw;
static uint64_t wraps;
static uint64_t excluded;

static struct {
    uint32_t count;
    uint64_t total;
    uint32_t max;
    uint32_t max_since;  // since the last gc_stats()
    uint32_t live_max;
    uint64_t t0;
} gcs;

void m0_clock_start(void) {
    REG(T_MODE) = 0;        // timer, not counter
    REG(T_BITMODE) = 3;     // 32 bits
    REG(T_PRESCALER) = 0;   // 16 MHz
    REG(T_CLEAR) = 1;
    REG(T_START) = 1;
}

static uint64_t raw_instructions(void) {
    REG(T_CAPTURE0) = 1;
    uint32_t v = REG(T_CC0);
    if (v < last_raw) {
        wraps += (uint64_t)1 << 32;
    }
    last_raw = v;
    return ((wraps | v) * 125u) >> 1;  // 62.5 instructions a tick
}

uint64_t m0_instructions(void) {
    return raw_instructions() - excluded;
}

void m0_gc_begin(void) {
    gcs.t0 = m0_instructions();
}

void m0_gc_end(void) {
    uint64_t dt = m0_instructions() - gcs.t0;
    gcs.count++;
    gcs.total += dt;
    if (dt > gcs.max) {
        gcs.max = (uint32_t)dt;
    }
    if (dt > gcs.max_since) {
        gcs.max_since = (uint32_t)dt;
    }
    uint64_t e0 = raw_instructions();
    gc_info_t info;
    gc_info(&info);
    if (info.used > gcs.live_max) {
        gcs.live_max = info.used;
    }
    excluded += raw_instructions() - e0;
}

static mp_obj_t m0_icount(void) {
    return MP_OBJ_NEW_SMALL_INT((mp_int_t)(m0_instructions() & TICKS_MASK));
}
static MP_DEFINE_CONST_FUN_OBJ_0(m0_icount_obj, m0_icount);

static mp_obj_t m0_instructions_obj_fn(void) {
    return mp_obj_new_int_from_ull(m0_instructions());
}
static MP_DEFINE_CONST_FUN_OBJ_0(m0_instructions_obj, m0_instructions_obj_fn);

static mp_obj_t m0_gc_stats(void) {
    gc_info_t info;
    gc_info(&info);
    mp_obj_t items[6] = {
        mp_obj_new_int_from_uint(gcs.count),
        mp_obj_new_int_from_ull(gcs.total),
        mp_obj_new_int_from_uint(gcs.max),
        mp_obj_new_int_from_uint(gcs.live_max),
        mp_obj_new_int_from_uint(info.total),
        mp_obj_new_int_from_uint(gcs.max_since),
    };
    gcs.max_since = 0;
    return mp_obj_new_tuple(6, items);
}
static MP_DEFINE_CONST_FUN_OBJ_0(m0_gc_stats_obj, m0_gc_stats);

// -- files over semihosting ------------------------------------------------------

typedef struct {
    mp_obj_base_t base;
    int fd;
} m0_file_t;

static const mp_obj_type_t m0_file_type;

static int semi_mode(const char *m) {
    static const char *const modes[] = {"r", "rb", "r+", "r+b", "w", "wb", "w+", "w+b", "a", "ab"};
    for (int i = 0; i < 10; i++) {
        if (strcmp(m, modes[i]) == 0) {
            return i;
        }
    }
    mp_raise_ValueError(MP_ERROR_TEXT("mode must be r, rb, r+, r+b, w, wb, w+, w+b, a or ab"));
}

mp_obj_t m0_file_open(size_t n_args, const mp_obj_t *args, mp_map_t *kwargs) {
    (void)kwargs;
    const char *path = mp_obj_str_get_str(args[0]);
    int mode = semi_mode(n_args > 1 ? mp_obj_str_get_str(args[1]) : "r");
    int fd = sys_semihost_open(path, mode);
    if (fd < 0) {
        mp_raise_OSError(MP_ENOENT);
    }
    m0_file_t *f = mp_obj_malloc(m0_file_t, &m0_file_type);
    f->fd = fd;
    return MP_OBJ_FROM_PTR(f);
}

static mp_obj_t m0_file_make_new(const mp_obj_type_t *type, size_t n_args, size_t n_kw, const mp_obj_t *args) {
    (void)type;
    mp_arg_check_num(n_args, n_kw, 1, 2, false);
    return m0_file_open(n_args, args, NULL);
}

static m0_file_t *open_file(mp_obj_t self_in) {
    m0_file_t *f = MP_OBJ_TO_PTR(self_in);
    if (f->fd < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("I/O operation on closed file"));
    }
    return f;
}

static mp_obj_t m0_file_readinto(mp_obj_t self_in, mp_obj_t buf_in) {
    m0_file_t *f = open_file(self_in);
    mp_buffer_info_t b;
    mp_get_buffer_raise(buf_in, &b, MP_BUFFER_WRITE);
    size_t got = 0;
    while (got < b.len) {  // a FIFO hands out what it holds: read until full or the end
        size_t ask = b.len - got;
        uintptr_t missing = sys_semihost_read(f->fd, (char *)b.buf + got, ask);
        if (missing >= ask) {
            break;
        }
        got += ask - missing;
    }
    return MP_OBJ_NEW_SMALL_INT(got);
}
static MP_DEFINE_CONST_FUN_OBJ_2(m0_file_readinto_obj, m0_file_readinto);

static mp_obj_t m0_file_read(mp_obj_t self_in, mp_obj_t n_in) {
    mp_int_t n = mp_obj_get_int(n_in);
    if (n < 0) {
        mp_raise_ValueError(MP_ERROR_TEXT("read(n) needs n >= 0"));
    }
    vstr_t v;
    vstr_init_len(&v, n);
    mp_obj_t view = mp_obj_new_bytearray_by_ref(n, v.buf);
    v.len = MP_OBJ_SMALL_INT_VALUE(m0_file_readinto(self_in, view));
    return mp_obj_new_bytes_from_vstr(&v);
}
static MP_DEFINE_CONST_FUN_OBJ_2(m0_file_read_obj, m0_file_read);

static mp_obj_t m0_file_write(mp_obj_t self_in, mp_obj_t buf_in) {
    m0_file_t *f = open_file(self_in);
    mp_buffer_info_t b;
    mp_get_buffer_raise(buf_in, &b, MP_BUFFER_READ);
    if (b.len && sys_semihost_write(f->fd, b.buf, b.len) != 0) {
        mp_raise_OSError(MP_EIO);
    }
    return MP_OBJ_NEW_SMALL_INT(b.len);
}
static MP_DEFINE_CONST_FUN_OBJ_2(m0_file_write_obj, m0_file_write);

static mp_obj_t m0_file_close(mp_obj_t self_in) {
    m0_file_t *f = MP_OBJ_TO_PTR(self_in);
    if (f->fd >= 0) {
        sys_semihost_close(f->fd);
        f->fd = -1;
    }
    return mp_const_none;
}
static MP_DEFINE_CONST_FUN_OBJ_1(m0_file_close_obj, m0_file_close);

static const mp_rom_map_elem_t m0_file_locals_table[] = {
    { MP_ROM_QSTR(MP_QSTR_readinto), MP_ROM_PTR(&m0_file_readinto_obj) },
    { MP_ROM_QSTR(MP_QSTR_read), MP_ROM_PTR(&m0_file_read_obj) },
    { MP_ROM_QSTR(MP_QSTR_write), MP_ROM_PTR(&m0_file_write_obj) },
    { MP_ROM_QSTR(MP_QSTR_close), MP_ROM_PTR(&m0_file_close_obj) },
};
static MP_DEFINE_CONST_DICT(m0_file_locals, m0_file_locals_table);

static MP_DEFINE_CONST_OBJ_TYPE(
    m0_file_type, MP_QSTR_File, MP_TYPE_FLAG_NONE,
    make_new, m0_file_make_new,
    locals_dict, &m0_file_locals
    );

static const mp_rom_map_elem_t m0_module_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_m0) },
    { MP_ROM_QSTR(MP_QSTR_icount), MP_ROM_PTR(&m0_icount_obj) },
    { MP_ROM_QSTR(MP_QSTR_instructions), MP_ROM_PTR(&m0_instructions_obj) },
    { MP_ROM_QSTR(MP_QSTR_gc_stats), MP_ROM_PTR(&m0_gc_stats_obj) },
    { MP_ROM_QSTR(MP_QSTR_File), MP_ROM_PTR(&m0_file_type) },
};
static MP_DEFINE_CONST_DICT(m0_module_globals, m0_module_globals_table);

const mp_obj_module_t m0_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&m0_module_globals,
};
MP_REGISTER_MODULE(MP_QSTR_m0, m0_module);
