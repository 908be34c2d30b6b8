/* The C kernel as a dynamic native module: `gtkernel.mpy` for armv6m.
 *
 *   from gtkernel import block      # same contract as gridtap_fw.kernel.block
 *   n = block(buf, start, nsets, nch, state, out)
 *
 * A thin wrapper over the public API of native/gt_kernel.h (gt_kernel_block,
 * GT_KERNEL_MAX_SETS) and native/mpy_module/gtkernel_args.h (the argument
 * checks and their ValueError texts, shared with the user C module), written
 * against MicroPython's py/dynruntime.h: the module loads into any armv6m
 * MicroPython of the same .mpy version (the stock rp2 image on a Pico
 * included) without rebuilding the image. gridtap_fw.power imports it when it
 * is on sys.path and falls back to the viper kernel otherwise. Built by
 * `make m0` (this directory's Makefile; hardware/qemu-m0.md).
 */
#include "py/dynruntime.h"

#include "gt_kernel.h"
#include "gtkernel_args.h"

/* Called as a viper-kind function: MicroPython passes the arguments unchecked. */
static mp_obj_t gtkernel_block(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args)
{
    mp_buffer_info_t buf;
    mp_buffer_info_t state;
    mp_buffer_info_t out;
    mp_int_t start;
    mp_int_t nsets;
    mp_int_t nch;
    const char *err;
    uint32_t n;

    (void)self;
    mp_arg_check_num(n_args, n_kw, 6, 6, false);
    mp_get_buffer_raise(args[0], &buf, MP_BUFFER_READ);
    start = mp_obj_get_int(args[1]);
    nsets = mp_obj_get_int(args[2]);
    nch = mp_obj_get_int(args[3]);
    mp_get_buffer_raise(args[4], &state, MP_BUFFER_RW);
    mp_get_buffer_raise(args[5], &out, MP_BUFFER_RW);
    err = gtkernel_check_args((uintptr_t)buf.buf, buf.len, (intptr_t)start, (intptr_t)nsets, (intptr_t)nch,
                              (uintptr_t)state.buf, state.len, (uintptr_t)out.buf, out.len);
    if (err != NULL) {
        mp_raise_ValueError(err);
    }
    if (nsets < start) {
        nsets = start; /* nothing to consume; also keeps the unsigned argument sane */
    }
    n = gt_kernel_block((const uint16_t *)buf.buf, (uint32_t)start, (uint32_t)nsets, (uint32_t)nch,
                        (int32_t *)state.buf, (int32_t *)out.buf);
    return MP_OBJ_NEW_SMALL_INT((mp_int_t)n);
}

/* The module's body, run once at import: the linker puts it at the start of the text. */
mp_obj_t mpy_init(mp_obj_fun_bc_t *self, size_t n_args, size_t n_kw, mp_obj_t *args)
{
    MP_DYNRUNTIME_INIT_ENTRY
    (void)n_args;
    (void)n_kw;
    (void)args;
    mp_store_global(MP_QSTR_block, MP_DYNRUNTIME_MAKE_FUNCTION(gtkernel_block));
    mp_store_global(MP_QSTR_MAX_SETS, MP_OBJ_NEW_SMALL_INT(GT_KERNEL_MAX_SETS));
    MP_DYNRUNTIME_INIT_EXIT
}
