// binascii.crc32 for the qemu_m0 port. The stock rp2 image has it (extmod's
// binascii, MICROPY_PY_BINASCII_CRC32 at the EXTRA_FEATURES level the rp2 port
// uses); the sdist has no extmod/, and without it gridtap_fw.wire falls back to
// a Python loop whose 32-bit values are long ints on a 32-bit port. Only crc32:
// the firmware uses nothing else from binascii.
//
//   binascii.crc32(data[, value]) -> CRC-32/ISO-HDLC (zlib's) of data, continuing
//                                    from value; check value 0xCBF43926 for b"123456789"
#include "py/runtime.h"

// the reflected polynomial 0xEDB88320, four bits at a time
static const uint32_t nibble[16] = {
    0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu, 0x76dc4190u, 0x6b6b51f4u, 0x4db26158u, 0x5005713cu,
    0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu, 0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu,
};

static mp_obj_t binascii_crc32(size_t n_args, const mp_obj_t *args) {
    mp_buffer_info_t b;
    mp_get_buffer_raise(args[0], &b, MP_BUFFER_READ);
    uint32_t c = n_args > 1 ? ~mp_obj_get_int_truncated(args[1]) : 0xFFFFFFFFu;
    const uint8_t *p = b.buf;
    for (size_t i = 0; i < b.len; i++) {
        c ^= p[i];
        c = (c >> 4) ^ nibble[c & 15];
        c = (c >> 4) ^ nibble[c & 15];
    }
    return mp_obj_new_int_from_uint(~c);
}
static MP_DEFINE_CONST_FUN_OBJ_VAR_BETWEEN(binascii_crc32_obj, 1, 2, binascii_crc32);

static const mp_rom_map_elem_t binascii_globals_table[] = {
    { MP_ROM_QSTR(MP_QSTR___name__), MP_ROM_QSTR(MP_QSTR_binascii) },
    { MP_ROM_QSTR(MP_QSTR_crc32), MP_ROM_PTR(&binascii_crc32_obj) },
};
static MP_DEFINE_CONST_DICT(binascii_globals, binascii_globals_table);

const mp_obj_module_t binascii_module = {
    .base = { &mp_type_module },
    .globals = (mp_obj_dict_t *)&binascii_globals,
};
MP_REGISTER_MODULE(MP_QSTR_binascii, binascii_module);
