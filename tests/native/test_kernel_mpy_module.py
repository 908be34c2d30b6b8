"""The gtkernel MicroPython user C module glue (native/mpy_module), checked on the host.

A full rp2 image cannot be built here, so the glue is compiled against a small
stand-in for the part of MicroPython's C API it uses (py/runtime.h: buffers,
ints, ValueError, the function/dict/module macros), with the same strict flags
as the board build, and then called through that stand-in: argument
conversion, the ValueError texts (shared with the viper kernel) and the result
must match the viper contract. The stand-in is written for this test from
MicroPython's documented API; the real build is `make -C ports/rp2
USER_C_MODULES=.../native/mpy_module/micropython.cmake` (native/mpy_module/README.md).
"""

from __future__ import annotations

import array
import importlib
import sys
from typing import Any

import pytest

from tests.support.kernel_ref import NATIVE, STATE_LEN, new_state, out_len, ref_block
from tests.support.mpy import run_micropython

MODDIR = NATIVE / "mpy_module"

RUNTIME_H = r"""
#ifndef SHIM_PY_RUNTIME_H
#define SHIM_PY_RUNTIME_H
#include <stddef.h>
#include <stdint.h>
typedef void *mp_obj_t;
typedef intptr_t mp_int_t;
typedef const char *mp_rom_error_text_t;
typedef struct { void *buf; size_t len; int typecode; } mp_buffer_info_t;
#define MP_BUFFER_READ 1
#define MP_BUFFER_WRITE 2
#define MP_BUFFER_RW (MP_BUFFER_READ | MP_BUFFER_WRITE)
typedef struct { int kind; } mp_obj_type_t;
extern const mp_obj_type_t mp_type_ValueError, mp_type_module;
void mp_get_buffer_raise(mp_obj_t obj, mp_buffer_info_t *bufinfo, mp_int_t flags);
mp_int_t mp_obj_get_int(mp_obj_t arg);
void mp_raise_msg_varg(const mp_obj_type_t *exc_type, mp_rom_error_text_t fmt, ...) __attribute__((noreturn));
#define MP_ERROR_TEXT(x) (x)
#define MP_OBJ_NEW_SMALL_INT(x) ((mp_obj_t)(((uintptr_t)(x) << 1) | 1u))
typedef struct {
    size_t n_args_min, n_args_max;
    mp_obj_t (*fun)(size_t, const mp_obj_t *);
} mp_obj_fun_builtin_var_t;
#define MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(obj_name, n_min, n_max, fun_name) \
    const mp_obj_fun_builtin_var_t obj_name = {n_min, n_max, fun_name}
enum { MP_QSTR___name__ = 1, MP_QSTR_gtkernel, MP_QSTR_block, MP_QSTR_MAX_SETS };
typedef struct { uintptr_t key; uintptr_t value; } mp_rom_map_elem_t;
#define MP_ROM_QSTR(q) ((uintptr_t)(q))
#define MP_ROM_PTR(p) ((uintptr_t)(p))
#define MP_ROM_INT(i) ((uintptr_t)(i))
typedef struct { const mp_rom_map_elem_t *table; size_t len; } mp_obj_dict_t;
#define MP_DEFINE_CONST_DICT(name, table) \
    const mp_obj_dict_t name = {table, sizeof(table) / sizeof((table)[0])}
typedef struct { const mp_obj_type_t *type; } mp_obj_base_t;
typedef struct { mp_obj_base_t base; mp_obj_dict_t *globals; } mp_obj_module_t;
extern const mp_obj_module_t *const shim_registered_module;
#define MP_REGISTER_MODULE(qstr, module) \
    const mp_obj_module_t *const shim_registered_module = &(module)
#endif
"""

DRIVER_C = r"""
#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include "py/runtime.h"

typedef struct { int is_buf; void *buf; size_t len; mp_int_t value; } shim_obj_t;
const mp_obj_type_t mp_type_ValueError = {1}, mp_type_module = {2};
extern const mp_obj_module_t gtkernel_user_cmodule;
extern const mp_obj_module_t *const shim_registered_module;
static jmp_buf shim_jmp;
static char shim_msg[128];

void mp_get_buffer_raise(mp_obj_t obj, mp_buffer_info_t *bufinfo, mp_int_t flags) {
    shim_obj_t *o = (shim_obj_t *)obj;
    (void)flags;
    if (!o->is_buf) { snprintf(shim_msg, sizeof shim_msg, "TypeError"); longjmp(shim_jmp, 1); }
    bufinfo->buf = o->buf; bufinfo->len = o->len; bufinfo->typecode = 'B';
}
mp_int_t mp_obj_get_int(mp_obj_t arg) { return ((shim_obj_t *)arg)->value; }
void mp_raise_msg_varg(const mp_obj_type_t *exc_type, mp_rom_error_text_t fmt, ...) {
    va_list ap;
    int n = snprintf(shim_msg, sizeof shim_msg, "%s: ", exc_type == &mp_type_ValueError ? "ValueError" : "?");
    va_start(ap, fmt);
    vsnprintf(shim_msg + n, sizeof shim_msg - (size_t)n, fmt, ap);
    va_end(ap);
    longjmp(shim_jmp, 1);
}

long shim_call_block(void *buf, size_t buf_len, long start, long nsets, long nch,
                     void *state, size_t state_len, void *out, size_t out_len, char *err, size_t err_len) {
    shim_obj_t o[6] = {{1, buf, buf_len, 0}, {0, 0, 0, start}, {0, 0, 0, nsets}, {0, 0, 0, nch},
                       {1, state, state_len, 0}, {1, out, out_len, 0}};
    mp_obj_t args[6];
    mp_obj_t r;
    const mp_obj_fun_builtin_var_t *fn;
    int i;
    for (i = 0; i < 6; i++) args[i] = &o[i];
    err[0] = 0;
    if (setjmp(shim_jmp)) { snprintf(err, err_len, "%s", shim_msg); return -1; }
    /* reach the (static) function object through the module's globals, as import would */
    fn = (const mp_obj_fun_builtin_var_t *)gtkernel_user_cmodule.globals->table[1].value;
    if (fn->n_args_min != 6 || fn->n_args_max != 6) { snprintf(err, err_len, "arity"); return -1; }
    r = fn->fun(6, args);
    if (((uintptr_t)r & 1u) == 0) { snprintf(err, err_len, "not a small int"); return -1; }
    return (long)((intptr_t)r >> 1);
}
int shim_module_ok(void) {
    const mp_obj_dict_t *d = gtkernel_user_cmodule.globals;
    return gtkernel_user_cmodule.base.type == &mp_type_module && d->len == 3
        && d->table[0].value == MP_QSTR_gtkernel && d->table[1].key == MP_QSTR_block
        && d->table[2].key == MP_QSTR_MAX_SETS && d->table[2].value == 256u
        && shim_registered_module == &gtkernel_user_cmodule;
}
"""

CDEF = """
long shim_call_block(void *buf, size_t buf_len, long start, long nsets, long nch,
                     void *state, size_t state_len, void *out, size_t out_len, char *err, size_t err_len);
int shim_module_ok(void);
"""


@pytest.fixture(scope="module")
def glue(tmp_path_factory: pytest.TempPathFactory) -> Any:
    import cffi

    tmp = tmp_path_factory.mktemp("gtkernel_glue")
    (tmp / "py").mkdir()
    (tmp / "py" / "runtime.h").write_text(RUNTIME_H)
    ffi = cffi.FFI()
    ffi.cdef(CDEF)
    ffi.set_source("_gtkernel_glue", DRIVER_C,
                   sources=[str(MODDIR / "gtkernel.c"), str(MODDIR / "gtkernel_args.c"),
                            str(NATIVE / "gt_kernel.c")],
                   include_dirs=[str(tmp), str(MODDIR), str(NATIVE)],
                   extra_compile_args=["-std=c99", "-O1", "-Wall", "-Wextra", "-Werror"])
    ffi.compile(tmpdir=str(tmp), verbose=False)
    sys.path.insert(0, str(tmp))
    try:
        return importlib.import_module("_gtkernel_glue")
    finally:
        sys.path.remove(str(tmp))


def call(glue: Any, buf: Any, start: int, nsets: int, nch: int, state: Any, out: Any) -> int | str:
    ffi, lib = glue.ffi, glue.lib
    err = ffi.new("char[128]")
    cbuf, cstate, cout = ffi.from_buffer(buf), ffi.from_buffer(state), ffi.from_buffer(out)
    r = lib.shim_call_block(cbuf, len(cbuf), start, nsets, nch, cstate, len(cstate), cout, len(cout),
                            err, 128)
    return ffi.string(err).decode() if r < 0 else int(r)


def test_module_table_exposes_block_and_max_sets(glue: Any) -> None:
    assert glue.lib.shim_module_ok() == 1


def test_glue_runs_the_kernel_like_the_reference(glue: Any) -> None:
    samples = [(2048 + int(1800 * ((s % 40) - 20) / 20)) for s in range(200) for _ in range(4)]
    buf = array.array("H", samples)
    for start, nsets, st0 in ((0, 200, new_state(5, 0, (0, 33, 64))),
                              (17, 190, new_state(0, 1, (127, 1, 200))),
                              (150, 100, new_state(2047, 0, (5, 6, 7), 1000, 380))):
        state, out = array.array("i", st0), array.array("i", [1] * out_len(4))
        rstate, rout = list(st0), [1] * out_len(4)
        want = ref_block(samples, start, nsets, 4, rstate, rout)
        assert call(glue, buf, start, nsets, 4, state, out) == want
        assert (list(state), list(out)) == (rstate, rout)


def test_glue_rejects_what_the_viper_kernel_rejects_with_the_same_text(glue: Any) -> None:
    buf = bytearray(2 * 4 * 10)
    state, out = array.array("i", [0] * STATE_LEN), array.array("i", [0] * 20)
    sizes = {"state": STATE_LEN, "short": STATE_LEN - 1, "out20": 20, "out19": 19}
    bad = [
        ("state", "out20", 0, 10, 1),
        ("state", "out20", 0, 10, 6),
        ("state", "out20", -1, 10, 4),
        ("short", "out20", 0, 10, 4),
        ("state", "out19", 0, 10, 4),
        ("state", "out20", 0, 11, 4),
    ]
    got = [call(glue, buf, start, nsets, nch, array.array("i", [0] * sizes[s]),
                array.array("i", [0] * sizes[o])) for s, o, start, nsets, nch in bad]
    script = """
import array
from gridtap_fw import kernel
sizes = %r
for s, o, start, nsets, nch in %r:
    try:
        print(kernel.block(bytearray(80), start, nsets, nch, array.array('i', [0] * sizes[s]),
                           array.array('i', [0] * sizes[o])))
    except ValueError as e:
        print('ValueError: ' + str(e))
""" % (sizes, bad)
    viper = run_micropython(script).strip().split("\n")
    assert got == viper
    assert all(isinstance(g, str) and g.startswith("ValueError: kernel: ") for g in got)
    assert call(glue, buf, 0, 10, 4, state, out) == 10
    assert call(glue, buf, 5, 3, 4, state, out) == 0  # nsets before start: nothing to do


def test_glue_rejects_misaligned_buffers(glue: Any) -> None:
    raw = bytearray(2 * 4 * 10 + 1)
    view = memoryview(raw)[1:]
    state, out = array.array("i", [0] * STATE_LEN), array.array("i", [0] * 20)
    assert call(glue, view, 0, 10, 4, state, out) == "ValueError: kernel: buf must be 2-byte aligned"
    words = bytearray(4 * STATE_LEN + 4)
    assert (call(glue, bytearray(80), 0, 10, 4, memoryview(words)[1:4 * STATE_LEN + 1], out)
            == "ValueError: kernel: state and out must be 4-byte aligned")


def test_build_fragments_name_every_source() -> None:
    mk = (MODDIR / "micropython.mk").read_text()
    cmake = (MODDIR / "micropython.cmake").read_text()
    for src in ("gtkernel.c", "gtkernel_args.c", "gt_kernel.c"):
        assert src in mk and src in cmake
        assert (MODDIR / src).exists() or (NATIVE / src).exists()
    assert "target_link_libraries(usermod INTERFACE usermod_gtkernel)" in cmake
