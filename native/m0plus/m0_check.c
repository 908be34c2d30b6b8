/* The C kernel and codec as a Cortex-M0 program under QEMU (-M microbit, semihosting).
 *
 * tests/m0/test_m0_native.py writes cases to a file, runs this program on the
 * emulated core and compares every result with the host's (the Python
 * reference kernel, the protocol's documented vectors, zlib). Records,
 * little-endian, go from file <in> to file <out>, named
 * by the semihosting command line `check <in> <out>`:
 *   'K' nch start nsets nbuf (u32), buf (nbuf u16), state (201 i32), out (26 i32)
 *       -> ret (u32), state (201 i32), out (26 i32)       gt_kernel_block
 *   'D' n (u32), n bytes -> per message: len (u32) + gt_encode(msg) bytes;
 *       then 0xFFFFFFFF and the decoder's 9 counters (u32)  gt_decoder_feed
 *   'C' n, n bytes -> crc (u32)                             gt_crc32
 *   'B' n, n bytes -> len (u32) + COBS bytes                gt_cobs_encode
 *   'E' -> exit(0). Any malformed record exits with status 2.
 */
#include <semihost.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gt_kernel.h"
#include "gt_wire.h"

#define MAX_BYTES 4096
#define MAX_U16 (5 * 300)
#define OUT_WORDS 26

static int in = -1;
static int out = -1;
static char cmdline[512];
static uint16_t samples[MAX_U16];
static int32_t state[GT_KERNEL_STATE_LEN];
static int32_t sums[OUT_WORDS];
static uint8_t bytes[MAX_BYTES];
static uint8_t frame[MAX_BYTES + MAX_BYTES / 254 + 1]; /* a COBS of MAX_BYTES, or a frame */
static gt_decoder dec;
static gt_msg msgs[8];

static void fail(void) {
    exit(2);
}

static void get(void *p, size_t n) {
    /* semihosting READ answers the count it could not read */
    if (n && sys_semihost_read(in, p, n) != 0) {
        fail();
    }
}

static void put(const void *p, size_t n) {
    if (n && sys_semihost_write(out, p, n) != 0) {
        fail();
    }
}

/* "check <in> <out>": the two file names, cut out of the command line in place */
static int open_files(void) {
    if (sys_semihost_get_cmdline(cmdline, sizeof(cmdline)) != 0) {
        return -1;
    }
    char *word[3];
    char *s = cmdline;
    for (int i = 0; i < 3; i++) {
        while (*s == ' ') {
            s++;
        }
        if (!*s) {
            return -1;
        }
        word[i] = s;
        while (*s && *s != ' ') {
            s++;
        }
        if (*s) {
            *s++ = 0;
        }
    }
    in = sys_semihost_open(word[1], 1);   /* "rb" */
    out = sys_semihost_open(word[2], 5);  /* "wb" */
    return in >= 0 && out >= 0 ? 0 : -1;
}

static uint32_t get_u32(void) {
    uint8_t b[4];
    get(b, 4);
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

static void put_u32(uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, 4);
}

static uint32_t get_bytes(void) {
    uint32_t n = get_u32();
    if (n > MAX_BYTES) {
        fail();
    }
    get(bytes, n);
    return n;
}

static void kernel_case(void) {
    uint32_t nch = get_u32(), start = get_u32(), nsets = get_u32(), nbuf = get_u32();
    if (nbuf > MAX_U16) {
        fail();
    }
    get(samples, 2 * nbuf);  /* little-endian host and guest */
    get(state, sizeof(state));
    get(sums, sizeof(sums));
    uint32_t ret = gt_kernel_block(samples, start, nsets, nch, state, sums);
    put_u32(ret);
    put(state, sizeof(state));
    put(sums, sizeof(sums));
}

static void decode_case(void) {
    uint32_t n = get_bytes();
    gt_decoder_init(&dec);
    size_t pos = 0;
    while (pos < n) {
        size_t used = 0;
        size_t got = gt_decoder_feed(&dec, bytes + pos, n - pos, msgs, 8, &used);
        for (size_t i = 0; i < got; i++) {
            size_t len = gt_encode(&msgs[i], frame, sizeof(frame));
            put_u32((uint32_t)len);
            put(frame, len);
        }
        pos += used;
        if (!used && !got) {
            fail();
        }
    }
    put_u32(0xFFFFFFFFu);
    for (int i = 0; i < GT_N_COUNTERS; i++) {
        put_u32(dec.counts[i]);
    }
}

int main(void) {
    if (open_files() != 0) {
        exit(2);
    }
    for (;;) {
        uint8_t tag;
        get(&tag, 1);
        if (tag == 'K') {
            kernel_case();
        } else if (tag == 'D') {
            decode_case();
        } else if (tag == 'C') {
            uint32_t n = get_bytes();
            put_u32(gt_crc32(bytes, n));
        } else if (tag == 'B') {
            uint32_t n = get_bytes();
            size_t len = gt_cobs_encode(bytes, n, frame);
            put_u32((uint32_t)len);
            put(frame, len);
        } else if (tag == 'E') {
            sys_semihost_close(out);
            exit(0);
        } else {
            fail();
        }
    }
}
