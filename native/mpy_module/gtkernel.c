/* MicroPython user C module `gtkernel`: native/gt_kernel.c on the board image.
 *
 *   from gtkernel import block      # same contract as gridtap_fw.kernel.block
 *   n = block(buf, start, nsets, nch, state, out)
 *
 * buf is a bytearray of u16 samples, state and out are array('i'); see
 * docs/kernel.md. Bad arguments raise ValueError with the viper kernel's text.
 * Build: see native/mpy_module/README.md.
 */
#include "py/runtime.h"

#include "gt_kernel.h"
#include "gtkernel_args.h"

static mp_obj_t gtkernel_block(size_t n_args, const mp_obj_t *args)
{
    mp_buffer_info_t buf;
    mp_buffer_info_t state;
    mp_buffer_info_t out;
    mp_int_t start;
    mp_int_t nsets;
    mp_int_t nch;
    const char *err;
    uint32_t n;

    (void)n_args; /* always 6: MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(…, 6, 6, …) */
    mp_get_buffer_raise(args[0], &buf, MP_BUFFER_READ);
    start = mp_obj_get_int(args[1]);
    nsets = mp_obj_get_int(args[2]);
    nch = mp_obj_get_int(args[3]);
    mp_get_buffer_raise(args[4], &state, MP_BUFFER_RW);
    mp_get_buffer_raise(args[5], &out, MP_BUFFER_RW);
    err = gtkernel_check_args((uintptr_t)buf.buf, buf.len, (intptr_t)start, (intptr_t)nsets, (intptr_t)nch,
                              (uintptr_t)state.buf, state.len, (uintptr_t)out.buf, out.len);
    if (err != NULL) {
        /* "%s": MP_ERROR_TEXT needs a literal where ROM text is compressed (rp2) */
        mp_raise_msg_varg(&mp_type_ValueError, MP_ERROR_TEXT("%s"), err);
    }
    if (nsets < start) {
        nsets = start; /* nothing to consume; also keeps the unsigned argument sane */
    }
    n = gt_kernel_block((const uint16_t *)buf.buf, (uint32_t)start, (uint32_t)nsets, (uint32_t)nch,
                        (int32_t *)state.buf, (int32_t *)out.buf);
    return MP_OBJ_NEW_SMALL_INT((mp_int_t)n);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(gtkernel_block_obj, 6, 6, gtkernel_block);

static const mp_rom_map_elem_t gtkernel_module_globals_table[] = {
    {MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_gtkernel)},
    {MP_ROM_QSTR(MP_QSTR_block), MP_ROM_PTR(&gtkernel_block_obj)},
    {MP_ROM_QSTR(MP_QSTR_MAX_SETS), MP_ROM_INT(GT_KERNEL_MAX_SETS)},
};
static MP_DEFINE_CONST_DICT(gtkernel_module_globals, gtkernel_module_globals_table);

const mp_obj_module_t gtkernel_user_cmodule = {
    .base = {&mp_type_module},
    .globals = (mp_obj_dict_t *)&gtkernel_module_globals,
};

MP_REGISTER_MODULE(MP_QSTR_gtkernel, gtkernel_user_cmodule);
