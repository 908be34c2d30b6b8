/*
 * libFuzzer harness for native/gt_wire.c (build and run: make fuzz).
 *
 * The first input byte picks a mode:
 *   0  stream: the rest is link bytes. Decoder A takes them in one call;
 *      decoder B in pieces cut at pseudo-random points (seeded by byte 1)
 *      with a small output array. Both must agree on every message, every
 *      counter and the buffered state, and every message A delivers must
 *      encode back to a frame that decodes to the same message.
 *   1  frame: the rest is header|payload; the harness appends a correct CRC,
 *      COBS-encodes and delimits it, so the version/type/length/value checks
 *      get explored. A delivered message must re-encode to exactly the frame.
 *   2  typed: the rest is copied over a zeroed gt_msg and encoded. If the
 *      encoder accepts it, the frame must decode to one message that encodes
 *      to the same frame (encode -> decode round trip from typed values).
 * Any disagreement traps, so ASan/UBSan/libFuzzer report it as a crash.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "gt_wire.h"

#define CHECK(cond)                                                                                  \
    do {                                                                                             \
        if (!(cond)) {                                                                               \
            __builtin_trap();                                                                        \
        }                                                                                            \
    } while (0)

#define MAX_INPUT 65536
#define MAX_MSGS (MAX_INPUT / 2 + 2)
#define OUT_CAP 64

static uint8_t log_a[(size_t)MAX_MSGS * GT_MAX_FRAME];
static size_t log_len[MAX_MSGS];
static gt_msg out[OUT_CAP];

/* Encode m (must succeed: the decoder delivered it), decode the frame again,
 * and check it is one message that encodes identically. Returns frame length. */
static size_t round_trip(const gt_msg *m, uint8_t *frame)
{
    uint8_t again[GT_MAX_FRAME];
    gt_decoder d;
    gt_msg back;
    size_t used = 0;
    size_t n = gt_encode(m, frame, GT_MAX_FRAME);
    CHECK(n >= 12 && n <= GT_MAX_FRAME);
    CHECK(frame[0] == 0 && frame[n - 1] == 0);
    CHECK(memchr(frame + 1, 0, n - 2) == NULL);
    gt_decoder_init(&d);
    CHECK(gt_decoder_feed(&d, frame, n, &back, 1, &used) == 1);
    CHECK(used == n);
    CHECK(d.counts[GT_C_OK] == 1);
    CHECK(back.type == m->type && back.seq == m->seq && back.flags == m->flags);
    CHECK(gt_encode(&back, again, sizeof again) == n);
    CHECK(memcmp(again, frame, n) == 0);
    return n;
}

static void check_bounded(const gt_decoder *d)
{
    CHECK(d->len <= GT_MAX_ENCODED);
    CHECK(d->overflow <= 1);
    CHECK(!(d->overflow && d->len));
}

static uint32_t next_rand(uint32_t *s)
{
    *s = *s * 1664525U + 1013904223U;
    return *s >> 8;
}

static void stream_mode(const uint8_t *data, size_t size)
{
    gt_decoder a;
    gt_decoder b;
    size_t n_a = 0;
    size_t pos = 0;
    size_t i;
    size_t k;
    size_t used;
    size_t seen = 0;
    uint32_t seed;
    uint8_t frame[GT_MAX_FRAME];
    if (size < 1) {
        return;
    }
    seed = data[0] * 2654435761U;
    data++;
    size--;

    gt_decoder_init(&a);
    while (pos < size || pos == 0) {
        k = gt_decoder_feed(&a, data + pos, size - pos, out, OUT_CAP, &used);
        CHECK(used <= size - pos);
        CHECK(k <= OUT_CAP);
        CHECK(k == OUT_CAP || used == size - pos);
        for (i = 0; i < k; i++) {
            CHECK(n_a < MAX_MSGS);
            log_len[n_a] = round_trip(&out[i], log_a + n_a * GT_MAX_FRAME);
            n_a++;
        }
        pos += used;
        check_bounded(&a);
        if (size == 0) {
            break;
        }
    }

    gt_decoder_init(&b);
    pos = 0;
    while (pos < size) {
        size_t piece = 1 + next_rand(&seed) % 300;
        size_t cap = 1 + next_rand(&seed) % 3;
        size_t end = piece < size - pos ? pos + piece : size;
        while (pos < end) {
            k = gt_decoder_feed(&b, data + pos, end - pos, out, cap, &used);
            CHECK(k <= cap);
            for (i = 0; i < k; i++) {
                size_t n = gt_encode(&out[i], frame, sizeof frame);
                CHECK(seen < n_a);
                CHECK(n == log_len[seen]);
                CHECK(memcmp(frame, log_a + seen * GT_MAX_FRAME, n) == 0);
                seen++;
            }
            pos += used;
            check_bounded(&b);
        }
    }
    CHECK(seen == n_a);
    CHECK(memcmp(a.counts, b.counts, sizeof a.counts) == 0);
    CHECK(a.len == b.len && a.overflow == b.overflow);
    CHECK(a.counts[GT_C_OK] == n_a);
}

static void frame_mode(const uint8_t *data, size_t size)
{
    uint8_t raw[GT_MAX_RAW + 8];
    uint8_t enc[GT_MAX_FRAME + 8];
    uint8_t again[GT_MAX_FRAME];
    gt_decoder d;
    gt_msg m;
    uint32_t crc;
    uint32_t total = 0;
    size_t n;
    size_t used;
    size_t got;
    size_t i;
    if (size > GT_MAX_RAW - GT_CRC_LEN + 2) {
        size = GT_MAX_RAW - GT_CRC_LEN + 2; /* a little past the limit, too */
    }
    memcpy(raw, data, size);
    crc = gt_crc32(raw, size);
    for (i = 0; i < 4; i++) {
        raw[size + i] = (uint8_t)(crc >> (8 * i));
    }
    n = size + 4;
    enc[0] = 0;
    n = gt_cobs_encode(raw, n, enc + 1);
    enc[1 + n] = 0;
    n += 2;

    gt_decoder_init(&d);
    got = gt_decoder_feed(&d, enc, n, &m, 1, &used);
    CHECK(used == n);
    for (i = 0; i < GT_N_COUNTERS; i++) {
        total += d.counts[i];
    }
    CHECK(total == 1); /* exactly one verdict per frame */
    CHECK(d.counts[GT_C_COBS] == 0);
    CHECK(got == d.counts[GT_C_OK]);
    if (got == 1) {
        CHECK(gt_encode(&m, again, sizeof again) == n);
        CHECK(memcmp(again, enc, n) == 0);
        round_trip(&m, again);
    }
}

static void typed_mode(const uint8_t *data, size_t size)
{
    gt_msg m;
    uint8_t frame[GT_MAX_FRAME];
    uint8_t again[GT_MAX_FRAME];
    size_t n;
    memset(&m, 0, sizeof m);
    memcpy(&m, data, size < sizeof m ? size : sizeof m);
    n = gt_encode(&m, frame, sizeof frame);
    if (n == 0) {
        return;
    }
    CHECK(round_trip(&m, again) == n);
    CHECK(memcmp(again, frame, n) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > MAX_INPUT) {
        return 0;
    }
    switch (data[0] % 3) {
    case 0:
        stream_mode(data + 1, size - 1);
        break;
    case 1:
        frame_mode(data + 1, size - 1);
        break;
    default:
        typed_mode(data + 1, size - 1);
        break;
    }
    return 0;
}
