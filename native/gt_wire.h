/*
 * gridtap link protocol v1 in C99: CRC-32, COBS, message encoder and a
 * streaming decoder. docs/protocol.md is the contract; the reference codec is
 * firmware/gridtap_fw/wire.py and this file accepts and rejects exactly the
 * same byte streams, counting the same counters in the same order.
 *
 * Portable and freestanding: only <stdint.h> and <stddef.h>, no malloc, no
 * libc calls, explicit little-endian byte handling (no unaligned loads), so it
 * builds for the RP2040 (Cortex-M0+) and for the host (cffi, gridtap._native).
 */
#ifndef GT_WIRE_H
#define GT_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define GT_PROTO_VERSION 2
#define GT_HEADER_LEN 5
#define GT_CRC_LEN 4
#define GT_MAX_PAYLOAD 240
#define GT_MAX_RAW 249     /* header + payload + crc */
#define GT_MAX_ENCODED 250 /* COBS(raw), the most a decoder buffers */
#define GT_MAX_FRAME 252   /* 0x00 COBS(raw) 0x00 on the wire */

#define GT_FLAG_RETX 0x01

/* Message types. */
#define GT_HELLO 0x01
#define GT_HELLO_REQ 0x02
#define GT_TIME_SET 0x03
#define GT_TIME 0x04
#define GT_COUNTER 0x05
#define GT_PULSE 0x06
#define GT_GAUGE 0x07
#define GT_ACK 0x08
#define GT_NAK 0x09
#define GT_CONFIG_GET 0x0A
#define GT_CONFIG_SET 0x0B
#define GT_CONFIG 0x0C
#define GT_COMMIT 0x0D
#define GT_EVENT 0x0E

/* Decoder counters, in the order of wire.COUNTER_NAMES. */
#define GT_C_OK 0
#define GT_C_CRC 1
#define GT_C_OVERSIZE 2
#define GT_C_COBS 3
#define GT_C_RUNT 4
#define GT_C_VERSION 5
#define GT_C_TYPE 6
#define GT_C_LENGTH 7
#define GT_C_VALUE 8
#define GT_N_COUNTERS 9

#define GT_ACK_MAX 64
#define GT_CONFIG_GET_MAX 32
#define GT_CONFIG_TLV_MAX 238 /* GT_MAX_PAYLOAD - target - index */
#define GT_EVENT_MAX_TEXT 200

/* CONFIG parameter ids and the kind of value each one carries. */
#define GT_P_ENABLED 0x01
#define GT_P_SENSOR_ID 0x02
#define GT_P_SENSOR_ID_EXPORT 0x03
#define GT_P_GAIN_E6 0x04
#define GT_P_PHASE_MDEG 0x05
#define GT_P_INVERT 0x06
#define GT_P_METER_CONST_MILLI 0x07
#define GT_P_DEBOUNCE_MS 0x08
#define GT_P_TRIGGER 0x09
#define GT_P_UNIT 0x0A
#define GT_P_SAVE_WH 0x0B
#define GT_P_SAVE_MIN 0x0C

#define GT_K_NONE 0 /* unknown parameter */
#define GT_K_U8 1   /* 1 byte; the u8 parameters are all 0/1 flags */
#define GT_K_U16 2
#define GT_K_U32 3
#define GT_K_I32 4
#define GT_K_ID16 5 /* 16 raw bytes (a sensor id) */

/* ---- one struct per message type; field names match wire.FIELDS ---- */

typedef struct {
    uint8_t board_id[8];
    uint8_t fw_major;
    uint8_t fw_minor;
    uint8_t fw_patch;
    uint8_t proto;
    uint32_t boot_count;
    uint8_t reset_cause;
    uint32_t brownout_count;
    uint8_t n_ct;
    uint8_t n_pulse;
} gt_hello;

typedef struct {
    uint32_t unix_s;
    uint16_t ms; /* 0..999 */
} gt_time_set;

typedef struct {
    uint32_t unix_s;
    uint16_t ms; /* 0..999 */
    uint32_t uptime_ms;
    uint8_t synced; /* 0/1 */
} gt_time;

typedef struct {
    uint8_t sensor;
    uint32_t unix_s;
    uint16_t ms; /* 0..999 */
    uint32_t imp_wh;
    uint16_t imp_milli; /* 0..999 */
    uint32_t exp_wh;
    uint16_t exp_milli; /* 0..999 */
} gt_counter;

typedef struct {
    uint8_t input;
    uint32_t unix_s;
    uint16_t ms; /* 0..999 */
    uint32_t count;
    uint16_t milli; /* 0..999 */
    uint32_t pulses;
} gt_pulse;

typedef struct {
    uint8_t channel;
    uint32_t unix_s;
    uint16_t ms; /* 0..999 */
    int32_t power_mw;
    uint32_t va_mva;
    uint32_t vrms_mv;
    uint32_t irms_ma;
    int16_t pf_e4; /* -10000..10000 */
    uint16_t freq_mhz;
    int32_t q_mvar; /* protocol 2: reactive power, + lagging */
    uint32_t qpos_varh; /* reactive registers Q+ and Q- */
    uint16_t qpos_milli; /* 0..999 */
    uint32_t qneg_varh;
    uint16_t qneg_milli; /* 0..999 */
} gt_gauge;

typedef struct {
    uint8_t n; /* 1..GT_ACK_MAX */
    uint16_t seqs[GT_ACK_MAX];
} gt_ack;

typedef struct {
    uint16_t ref_seq;
    uint8_t ref_type;
    uint8_t reason;
} gt_nak;

typedef struct {
    uint8_t target; /* 0..3 */
    uint8_t index;
    uint8_t n; /* 0..GT_CONFIG_GET_MAX; 0 means all */
    uint8_t params[GT_CONFIG_GET_MAX];
} gt_config_get;

/* CONFIG_SET and CONFIG: the items are kept as their validated wire bytes
 * (param, len, value)*; read them with gt_config_next, add with gt_config_add. */
typedef struct {
    uint8_t target; /* 0..3 */
    uint8_t index;
    uint8_t n_items;
    uint8_t len; /* bytes used in tlv */
    uint8_t tlv[GT_CONFIG_TLV_MAX];
} gt_config;

typedef struct {
    uint8_t param; /* GT_P_* */
    uint8_t kind;  /* GT_K_*, set by gt_config_next; must match param for gt_config_add */
    union {
        uint8_t u8;
        uint16_t u16;
        uint32_t u32;
        int32_t i32;
        uint8_t id[16];
    } v;
} gt_config_item;

typedef struct {
    uint8_t what; /* 1..3 */
} gt_commit;

typedef struct {
    uint32_t unix_s;
    uint16_t ms;   /* 0..999 */
    uint8_t level; /* 0..4 */
    uint16_t code;
    uint8_t text_len; /* 0..GT_EVENT_MAX_TEXT */
    uint8_t text[GT_EVENT_MAX_TEXT];
} gt_event;

/* A decoded (or to-be-encoded) message: a tagged union on `type`. */
typedef struct {
    uint8_t type; /* GT_HELLO .. GT_EVENT */
    uint8_t flags;
    uint16_t seq;
    union {
        gt_hello hello;
        gt_time_set time_set;
        gt_time time;
        gt_counter counter;
        gt_pulse pulse;
        gt_gauge gauge;
        gt_ack ack;
        gt_nak nak;
        gt_config_get config_get;
        gt_config config; /* CONFIG_SET and CONFIG */
        gt_commit commit;
        gt_event event;
    } u;
} gt_msg;

/* Streaming decoder state: one frame of buffer, nothing else. */
typedef struct {
    uint32_t counts[GT_N_COUNTERS];
    uint16_t len;     /* bytes buffered since the last 0x00 */
    uint8_t overflow; /* current frame exceeded GT_MAX_ENCODED: being skipped */
    uint8_t buf[GT_MAX_ENCODED];
} gt_decoder;

/* CRC-32/ISO-HDLC (zlib's); gt_crc32_update continues a running value. */
uint32_t gt_crc32(const uint8_t *data, size_t n);
uint32_t gt_crc32_update(uint32_t crc, const uint8_t *data, size_t n);

/* COBS. encode: out needs n + n / 254 + 1 bytes; returns the length.
 * decode: writes at most n bytes and sets *out_len; returns 0, or -1 if enc
 * is not valid COBS (a code byte 0 or one that runs past the end). out may
 * equal enc (decoding in place is safe). */
size_t gt_cobs_encode(const uint8_t *raw, size_t n, uint8_t *out);
int gt_cobs_decode(const uint8_t *enc, size_t n, uint8_t *out, size_t *out_len);

/* Kind of value a parameter carries (GT_K_NONE if unknown) and its wire length. */
uint8_t gt_param_kind(uint8_t param);
uint8_t gt_param_len(uint8_t param);

/* Append one item to a CONFIG/CONFIG_SET message; item->kind must equal
 * gt_param_kind(item->param). Returns 0, or -1 (unknown parameter, wrong kind,
 * a 0/1 parameter out of range, or no room left) leaving c unchanged. */
int gt_config_add(gt_config *c, const gt_config_item *item);
/* Read the item at *pos (start at 0) and advance *pos; returns 1 for an
 * item, 0 at the end. Only for gt_config values the codec produced or checked. */
int gt_config_next(const gt_config *c, size_t *pos, gt_config_item *item);

/* Check and decode one payload of the given type into m->u (m->type, flags,
 * seq untouched). Returns GT_C_OK or the counter that names the problem. */
int gt_parse_payload(uint8_t type, const uint8_t *p, size_t n, gt_msg *m);
/* Check and decode one COBS-decoded frame (header | payload | crc). */
int gt_decode_raw(const uint8_t *raw, size_t n, gt_msg *m);

/* Encode m into a complete wire frame (both 0x00 delimiters) in out.
 * Returns the frame length (at most GT_MAX_FRAME), or 0 if m does not encode
 * to a frame every decoder accepts (unknown type, a value out of range, too
 * long) or cap is too small. */
size_t gt_encode(const gt_msg *m, uint8_t *out, size_t cap);

void gt_decoder_init(gt_decoder *d);
/* Feed n bytes; decoded messages go to out[0..max_out). Stops right after the
 * frame that fills out; *used (if not NULL) says how many bytes were taken,
 * so call again with the rest. Returns the number of messages written.
 * Never fails on any input; bad frames only raise d->counts. */
size_t gt_decoder_feed(gt_decoder *d, const uint8_t *data, size_t n, gt_msg *out, size_t max_out,
                       size_t *used);

#endif
