/*
 * gridtap link protocol v1 in C99; see gt_wire.h and docs/protocol.md.
 * Every check below mirrors firmware/gridtap_fw/wire.py in the same order, so
 * both decoders count the same counter for the same bad frame.
 */
#include "gt_wire.h"

/* CRC-32/ISO-HDLC table for the reflected polynomial 0xEDB88320. */
static const uint32_t crc_table[256] = {
    0x00000000U, 0x77073096U, 0xEE0E612CU, 0x990951BAU, 0x076DC419U, 0x706AF48FU,
    0xE963A535U, 0x9E6495A3U, 0x0EDB8832U, 0x79DCB8A4U, 0xE0D5E91EU, 0x97D2D988U,
    0x09B64C2BU, 0x7EB17CBDU, 0xE7B82D07U, 0x90BF1D91U, 0x1DB71064U, 0x6AB020F2U,
    0xF3B97148U, 0x84BE41DEU, 0x1ADAD47DU, 0x6DDDE4EBU, 0xF4D4B551U, 0x83D385C7U,
    0x136C9856U, 0x646BA8C0U, 0xFD62F97AU, 0x8A65C9ECU, 0x14015C4FU, 0x63066CD9U,
    0xFA0F3D63U, 0x8D080DF5U, 0x3B6E20C8U, 0x4C69105EU, 0xD56041E4U, 0xA2677172U,
    0x3C03E4D1U, 0x4B04D447U, 0xD20D85FDU, 0xA50AB56BU, 0x35B5A8FAU, 0x42B2986CU,
    0xDBBBC9D6U, 0xACBCF940U, 0x32D86CE3U, 0x45DF5C75U, 0xDCD60DCFU, 0xABD13D59U,
    0x26D930ACU, 0x51DE003AU, 0xC8D75180U, 0xBFD06116U, 0x21B4F4B5U, 0x56B3C423U,
    0xCFBA9599U, 0xB8BDA50FU, 0x2802B89EU, 0x5F058808U, 0xC60CD9B2U, 0xB10BE924U,
    0x2F6F7C87U, 0x58684C11U, 0xC1611DABU, 0xB6662D3DU, 0x76DC4190U, 0x01DB7106U,
    0x98D220BCU, 0xEFD5102AU, 0x71B18589U, 0x06B6B51FU, 0x9FBFE4A5U, 0xE8B8D433U,
    0x7807C9A2U, 0x0F00F934U, 0x9609A88EU, 0xE10E9818U, 0x7F6A0DBBU, 0x086D3D2DU,
    0x91646C97U, 0xE6635C01U, 0x6B6B51F4U, 0x1C6C6162U, 0x856530D8U, 0xF262004EU,
    0x6C0695EDU, 0x1B01A57BU, 0x8208F4C1U, 0xF50FC457U, 0x65B0D9C6U, 0x12B7E950U,
    0x8BBEB8EAU, 0xFCB9887CU, 0x62DD1DDFU, 0x15DA2D49U, 0x8CD37CF3U, 0xFBD44C65U,
    0x4DB26158U, 0x3AB551CEU, 0xA3BC0074U, 0xD4BB30E2U, 0x4ADFA541U, 0x3DD895D7U,
    0xA4D1C46DU, 0xD3D6F4FBU, 0x4369E96AU, 0x346ED9FCU, 0xAD678846U, 0xDA60B8D0U,
    0x44042D73U, 0x33031DE5U, 0xAA0A4C5FU, 0xDD0D7CC9U, 0x5005713CU, 0x270241AAU,
    0xBE0B1010U, 0xC90C2086U, 0x5768B525U, 0x206F85B3U, 0xB966D409U, 0xCE61E49FU,
    0x5EDEF90EU, 0x29D9C998U, 0xB0D09822U, 0xC7D7A8B4U, 0x59B33D17U, 0x2EB40D81U,
    0xB7BD5C3BU, 0xC0BA6CADU, 0xEDB88320U, 0x9ABFB3B6U, 0x03B6E20CU, 0x74B1D29AU,
    0xEAD54739U, 0x9DD277AFU, 0x04DB2615U, 0x73DC1683U, 0xE3630B12U, 0x94643B84U,
    0x0D6D6A3EU, 0x7A6A5AA8U, 0xE40ECF0BU, 0x9309FF9DU, 0x0A00AE27U, 0x7D079EB1U,
    0xF00F9344U, 0x8708A3D2U, 0x1E01F268U, 0x6906C2FEU, 0xF762575DU, 0x806567CBU,
    0x196C3671U, 0x6E6B06E7U, 0xFED41B76U, 0x89D32BE0U, 0x10DA7A5AU, 0x67DD4ACCU,
    0xF9B9DF6FU, 0x8EBEEFF9U, 0x17B7BE43U, 0x60B08ED5U, 0xD6D6A3E8U, 0xA1D1937EU,
    0x38D8C2C4U, 0x4FDFF252U, 0xD1BB67F1U, 0xA6BC5767U, 0x3FB506DDU, 0x48B2364BU,
    0xD80D2BDAU, 0xAF0A1B4CU, 0x36034AF6U, 0x41047A60U, 0xDF60EFC3U, 0xA867DF55U,
    0x316E8EEFU, 0x4669BE79U, 0xCB61B38CU, 0xBC66831AU, 0x256FD2A0U, 0x5268E236U,
    0xCC0C7795U, 0xBB0B4703U, 0x220216B9U, 0x5505262FU, 0xC5BA3BBEU, 0xB2BD0B28U,
    0x2BB45A92U, 0x5CB36A04U, 0xC2D7FFA7U, 0xB5D0CF31U, 0x2CD99E8BU, 0x5BDEAE1DU,
    0x9B64C2B0U, 0xEC63F226U, 0x756AA39CU, 0x026D930AU, 0x9C0906A9U, 0xEB0E363FU,
    0x72076785U, 0x05005713U, 0x95BF4A82U, 0xE2B87A14U, 0x7BB12BAEU, 0x0CB61B38U,
    0x92D28E9BU, 0xE5D5BE0DU, 0x7CDCEFB7U, 0x0BDBDF21U, 0x86D3D2D4U, 0xF1D4E242U,
    0x68DDB3F8U, 0x1FDA836EU, 0x81BE16CDU, 0xF6B9265BU, 0x6FB077E1U, 0x18B74777U,
    0x88085AE6U, 0xFF0F6A70U, 0x66063BCAU, 0x11010B5CU, 0x8F659EFFU, 0xF862AE69U,
    0x616BFFD3U, 0x166CCF45U, 0xA00AE278U, 0xD70DD2EEU, 0x4E048354U, 0x3903B3C2U,
    0xA7672661U, 0xD06016F7U, 0x4969474DU, 0x3E6E77DBU, 0xAED16A4AU, 0xD9D65ADCU,
    0x40DF0B66U, 0x37D83BF0U, 0xA9BCAE53U, 0xDEBB9EC5U, 0x47B2CF7FU, 0x30B5FFE9U,
    0xBDBDF21CU, 0xCABAC28AU, 0x53B39330U, 0x24B4A3A6U, 0xBAD03605U, 0xCDD70693U,
    0x54DE5729U, 0x23D967BFU, 0xB3667A2EU, 0xC4614AB8U, 0x5D681B02U, 0x2A6F2B94U,
    0xB40BBE37U, 0xC30C8EA1U, 0x5A05DF1BU, 0x2D02EF8DU
};

uint32_t gt_crc32_update(uint32_t crc, const uint8_t *data, size_t n)
{
    uint32_t c = crc ^ 0xFFFFFFFFU;
    size_t i;
    for (i = 0; i < n; i++) {
        c = crc_table[(c ^ data[i]) & 0xFFU] ^ (c >> 8);
    }
    return c ^ 0xFFFFFFFFU;
}

uint32_t gt_crc32(const uint8_t *data, size_t n)
{
    return gt_crc32_update(0, data, n);
}

/* ------------------------------------------------------------ byte order */

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)((uint16_t)p[0] | ((uint16_t)p[1] << 8));
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}

/* Two's-complement reinterpretation without implementation-defined casts. */
static int32_t get_i32(const uint8_t *p)
{
    uint32_t u = get32(p);
    return u <= 0x7FFFFFFFU ? (int32_t)u : (int32_t)-(int32_t)(~u) - 1;
}

static int16_t get_i16(const uint8_t *p)
{
    uint16_t u = get16(p);
    return u <= 0x7FFFU ? (int16_t)u : (int16_t)(-(int16_t)(uint16_t)(~u & 0xFFFFU) - 1);
}

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xFFU);
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v & 0xFFU);
    p[1] = (uint8_t)((v >> 8) & 0xFFU);
    p[2] = (uint8_t)((v >> 16) & 0xFFU);
    p[3] = (uint8_t)(v >> 24);
}

static void copy_bytes(uint8_t *dst, const uint8_t *src, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        dst[i] = src[i];
    }
}

/* ------------------------------------------------------------------ COBS */

size_t gt_cobs_encode(const uint8_t *raw, size_t n, uint8_t *out)
{
    size_t code_at = 0;
    size_t o = 1;
    size_t i;
    uint8_t code = 1;
    for (i = 0; i < n; i++) {
        if (raw[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = raw[i];
            code++;
            if (code == 0xFFU) {
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

int gt_cobs_decode(const uint8_t *enc, size_t n, uint8_t *out, size_t *out_len)
{
    /* Invariant o <= i, so decoding in place (out == enc) never overtakes. */
    size_t i = 0;
    size_t o = 0;
    while (i < n) {
        size_t code = enc[i];
        size_t j = i + code;
        size_t k;
        if (code == 0 || j > n) {
            return -1;
        }
        for (k = i + 1; k < j; k++) {
            out[o++] = enc[k];
        }
        i = j;
        if (code != 0xFFU && i < n) {
            out[o++] = 0;
        }
    }
    *out_len = o;
    return 0;
}

/* ------------------------------------------------------- CONFIG items */

uint8_t gt_param_kind(uint8_t param)
{
    switch (param) {
    case GT_P_ENABLED:
    case GT_P_INVERT:
    case GT_P_TRIGGER:
    case GT_P_UNIT:
        return GT_K_U8;
    case GT_P_SENSOR_ID:
    case GT_P_SENSOR_ID_EXPORT:
        return GT_K_ID16;
    case GT_P_GAIN_E6:
    case GT_P_METER_CONST_MILLI:
        return GT_K_U32;
    case GT_P_PHASE_MDEG:
        return GT_K_I32;
    case GT_P_DEBOUNCE_MS:
    case GT_P_SAVE_WH:
    case GT_P_SAVE_MIN:
        return GT_K_U16;
    default:
        return GT_K_NONE;
    }
}

static uint8_t kind_len(uint8_t kind)
{
    static const uint8_t lens[6] = {0, 1, 2, 4, 4, 16};
    return kind < 6 ? lens[kind] : 0;
}

uint8_t gt_param_len(uint8_t param)
{
    return kind_len(gt_param_kind(param));
}

int gt_config_add(gt_config *c, const gt_config_item *item)
{
    uint8_t kind = gt_param_kind(item->param);
    uint8_t ln = kind_len(kind);
    uint8_t *p;
    if (kind == GT_K_NONE || item->kind != kind || c->len > GT_CONFIG_TLV_MAX ||
        (size_t)GT_CONFIG_TLV_MAX - c->len < (size_t)2 + ln || c->n_items == 0xFFU) {
        return -1;
    }
    if (kind == GT_K_U8 && item->v.u8 > 1) {
        return -1;
    }
    p = c->tlv + c->len;
    p[0] = item->param;
    p[1] = ln;
    switch (kind) {
    case GT_K_U8:
        p[2] = item->v.u8;
        break;
    case GT_K_U16:
        put16(p + 2, item->v.u16);
        break;
    case GT_K_U32:
        put32(p + 2, item->v.u32);
        break;
    case GT_K_I32:
        put32(p + 2, (uint32_t)item->v.i32);
        break;
    default:
        copy_bytes(p + 2, item->v.id, 16);
        break;
    }
    c->len = (uint8_t)(c->len + 2 + ln);
    c->n_items++;
    return 0;
}

int gt_config_next(const gt_config *c, size_t *pos, gt_config_item *item)
{
    size_t at = *pos;
    size_t i;
    uint8_t kind;
    uint8_t ln;
    const uint8_t *p;
    if (at + 2 > c->len || c->len > GT_CONFIG_TLV_MAX) {
        return 0;
    }
    p = c->tlv + at;
    kind = gt_param_kind(p[0]);
    ln = kind_len(kind);
    if (kind == GT_K_NONE || p[1] != ln || at + 2 + ln > c->len) {
        return 0;
    }
    item->param = p[0];
    item->kind = kind;
    for (i = 0; i < sizeof item->v.id; i++) {
        item->v.id[i] = 0;
    }
    switch (kind) {
    case GT_K_U8:
        item->v.u8 = p[2];
        break;
    case GT_K_U16:
        item->v.u16 = get16(p + 2);
        break;
    case GT_K_U32:
        item->v.u32 = get32(p + 2);
        break;
    case GT_K_I32:
        item->v.i32 = get_i32(p + 2);
        break;
    default:
        copy_bytes(item->v.id, p + 2, 16);
        break;
    }
    *pos = at + 2 + ln;
    return 1;
}

/* ------------------------------------------------------------- payloads */

static int valid_type(uint8_t type)
{
    return type >= GT_HELLO && type <= GT_EVENT;
}

/* wire._parse_tlvs: the first bad item decides the counter. */
static int parse_tlvs(const uint8_t *p, size_t n, uint8_t *n_items)
{
    size_t at = 2;
    unsigned items = 0;
    while (at < n) {
        uint8_t kind;
        uint8_t ln;
        if (at + 2 > n) {
            return GT_C_LENGTH;
        }
        kind = gt_param_kind(p[at]);
        if (kind == GT_K_NONE) {
            return GT_C_VALUE;
        }
        ln = p[at + 1];
        if (ln != kind_len(kind) || at + 2 + ln > n) {
            return GT_C_LENGTH;
        }
        if (kind == GT_K_U8 && p[at + 2] > 1) {
            return GT_C_VALUE;
        }
        items++;
        at += (size_t)2 + ln;
    }
    *n_items = (uint8_t)items;
    return GT_C_OK;
}

int gt_parse_payload(uint8_t type, const uint8_t *p, size_t n, gt_msg *m)
{
    if (!valid_type(type)) {
        return GT_C_TYPE;
    }
    if (n > GT_MAX_PAYLOAD) {
        return GT_C_LENGTH;
    }
    switch (type) {
    case GT_HELLO: {
        gt_hello *h = &m->u.hello;
        if (n != 23) {
            return GT_C_LENGTH;
        }
        copy_bytes(h->board_id, p, 8);
        h->fw_major = p[8];
        h->fw_minor = p[9];
        h->fw_patch = p[10];
        h->proto = p[11];
        h->boot_count = get32(p + 12);
        h->reset_cause = p[16];
        h->brownout_count = get32(p + 17);
        h->n_ct = p[21];
        h->n_pulse = p[22];
        return GT_C_OK;
    }
    case GT_HELLO_REQ:
        return n != 0 ? GT_C_LENGTH : GT_C_OK;
    case GT_TIME_SET: {
        gt_time_set *t = &m->u.time_set;
        if (n != 6) {
            return GT_C_LENGTH;
        }
        t->unix_s = get32(p);
        t->ms = get16(p + 4);
        return t->ms > 999 ? GT_C_VALUE : GT_C_OK;
    }
    case GT_TIME: {
        gt_time *t = &m->u.time;
        if (n != 11) {
            return GT_C_LENGTH;
        }
        t->unix_s = get32(p);
        t->ms = get16(p + 4);
        t->uptime_ms = get32(p + 6);
        t->synced = p[10];
        return (t->ms > 999 || t->synced > 1) ? GT_C_VALUE : GT_C_OK;
    }
    case GT_COUNTER: {
        gt_counter *c = &m->u.counter;
        if (n != 19) {
            return GT_C_LENGTH;
        }
        c->sensor = p[0];
        c->unix_s = get32(p + 1);
        c->ms = get16(p + 5);
        c->imp_wh = get32(p + 7);
        c->imp_milli = get16(p + 11);
        c->exp_wh = get32(p + 13);
        c->exp_milli = get16(p + 17);
        return (c->ms > 999 || c->imp_milli > 999 || c->exp_milli > 999) ? GT_C_VALUE : GT_C_OK;
    }
    case GT_PULSE: {
        gt_pulse *q = &m->u.pulse;
        if (n != 17) {
            return GT_C_LENGTH;
        }
        q->input = p[0];
        q->unix_s = get32(p + 1);
        q->ms = get16(p + 5);
        q->count = get32(p + 7);
        q->milli = get16(p + 11);
        q->pulses = get32(p + 13);
        return (q->ms > 999 || q->milli > 999) ? GT_C_VALUE : GT_C_OK;
    }
    case GT_GAUGE: {
        gt_gauge *g = &m->u.gauge;
        if (n != 43) {
            return GT_C_LENGTH;
        }
        g->channel = p[0];
        g->unix_s = get32(p + 1);
        g->ms = get16(p + 5);
        g->power_mw = get_i32(p + 7);
        g->va_mva = get32(p + 11);
        g->vrms_mv = get32(p + 15);
        g->irms_ma = get32(p + 19);
        g->pf_e4 = get_i16(p + 23);
        g->freq_mhz = get16(p + 25);
        g->q_mvar = get_i32(p + 27);
        g->qpos_varh = get32(p + 31);
        g->qpos_milli = get16(p + 35);
        g->qneg_varh = get32(p + 37);
        g->qneg_milli = get16(p + 41);
        return (g->ms > 999 || g->pf_e4 < -10000 || g->pf_e4 > 10000 || g->qpos_milli > 999 ||
                g->qneg_milli > 999)
                   ? GT_C_VALUE
                   : GT_C_OK;
    }
    case GT_ACK: {
        gt_ack *a = &m->u.ack;
        size_t i;
        if (n < 3 || n % 2 != 1 || p[0] != (n - 1) / 2 || p[0] > GT_ACK_MAX) {
            return GT_C_LENGTH;
        }
        a->n = p[0];
        for (i = 0; i < a->n; i++) {
            a->seqs[i] = get16(p + 1 + 2 * i);
        }
        return GT_C_OK;
    }
    case GT_NAK: {
        gt_nak *k = &m->u.nak;
        if (n != 4) {
            return GT_C_LENGTH;
        }
        k->ref_seq = get16(p);
        k->ref_type = p[2];
        k->reason = p[3];
        return GT_C_OK;
    }
    case GT_CONFIG_GET: {
        gt_config_get *g = &m->u.config_get;
        size_t i;
        if (n < 2) {
            return GT_C_LENGTH;
        }
        if (p[0] > 3) {
            return GT_C_VALUE;
        }
        if (n - 2 > GT_CONFIG_GET_MAX) {
            return GT_C_LENGTH;
        }
        for (i = 2; i < n; i++) {
            if (gt_param_kind(p[i]) == GT_K_NONE) {
                return GT_C_VALUE;
            }
        }
        g->target = p[0];
        g->index = p[1];
        g->n = (uint8_t)(n - 2);
        copy_bytes(g->params, p + 2, n - 2);
        return GT_C_OK;
    }
    case GT_CONFIG_SET:
    case GT_CONFIG: {
        gt_config *c = &m->u.config;
        uint8_t items = 0;
        int rc;
        if (n < 2) {
            return GT_C_LENGTH;
        }
        if (p[0] > 3) {
            return GT_C_VALUE;
        }
        rc = parse_tlvs(p, n, &items);
        if (rc != GT_C_OK) {
            return rc;
        }
        if (type == GT_CONFIG_SET && items == 0) {
            return GT_C_LENGTH;
        }
        c->target = p[0];
        c->index = p[1];
        c->n_items = items;
        c->len = (uint8_t)(n - 2);
        copy_bytes(c->tlv, p + 2, n - 2);
        return GT_C_OK;
    }
    case GT_COMMIT:
        if (n != 1) {
            return GT_C_LENGTH;
        }
        m->u.commit.what = p[0];
        return (p[0] < 1 || p[0] > 3) ? GT_C_VALUE : GT_C_OK;
    default: { /* GT_EVENT: valid_type() leaves nothing else */
        gt_event *e = &m->u.event;
        if (n < 9 || n - 9 > GT_EVENT_MAX_TEXT) {
            return GT_C_LENGTH;
        }
        e->unix_s = get32(p);
        e->ms = get16(p + 4);
        e->level = p[6];
        e->code = get16(p + 7);
        if (e->ms > 999 || e->level > 4) {
            return GT_C_VALUE;
        }
        e->text_len = (uint8_t)(n - 9);
        copy_bytes(e->text, p + 9, n - 9);
        return GT_C_OK;
    }
    }
}

int gt_decode_raw(const uint8_t *raw, size_t n, gt_msg *m)
{
    int rc;
    if (n < GT_HEADER_LEN + GT_CRC_LEN) {
        return GT_C_RUNT;
    }
    if (gt_crc32(raw, n - GT_CRC_LEN) != get32(raw + n - GT_CRC_LEN)) {
        return GT_C_CRC;
    }
    if (raw[0] != GT_PROTO_VERSION) {
        return GT_C_VERSION;
    }
    if (!valid_type(raw[1])) {
        return GT_C_TYPE;
    }
    if (n - GT_HEADER_LEN - GT_CRC_LEN > GT_MAX_PAYLOAD) {
        return GT_C_LENGTH;
    }
    rc = gt_parse_payload(raw[1], raw + GT_HEADER_LEN, n - GT_HEADER_LEN - GT_CRC_LEN, m);
    if (rc != GT_C_OK) {
        return rc;
    }
    m->type = raw[1];
    m->flags = raw[2];
    m->seq = get16(raw + 3);
    return GT_C_OK;
}

/* --------------------------------------------------------------- encoder */

/* Pack m's payload into p; returns its length, or -1 if it cannot be packed. */
static int pack_payload(const gt_msg *m, uint8_t *p)
{
    size_t i;
    switch (m->type) {
    case GT_HELLO: {
        const gt_hello *h = &m->u.hello;
        copy_bytes(p, h->board_id, 8);
        p[8] = h->fw_major;
        p[9] = h->fw_minor;
        p[10] = h->fw_patch;
        p[11] = h->proto;
        put32(p + 12, h->boot_count);
        p[16] = h->reset_cause;
        put32(p + 17, h->brownout_count);
        p[21] = h->n_ct;
        p[22] = h->n_pulse;
        return 23;
    }
    case GT_HELLO_REQ:
        return 0;
    case GT_TIME_SET:
        put32(p, m->u.time_set.unix_s);
        put16(p + 4, m->u.time_set.ms);
        return 6;
    case GT_TIME:
        put32(p, m->u.time.unix_s);
        put16(p + 4, m->u.time.ms);
        put32(p + 6, m->u.time.uptime_ms);
        p[10] = m->u.time.synced;
        return 11;
    case GT_COUNTER: {
        const gt_counter *c = &m->u.counter;
        p[0] = c->sensor;
        put32(p + 1, c->unix_s);
        put16(p + 5, c->ms);
        put32(p + 7, c->imp_wh);
        put16(p + 11, c->imp_milli);
        put32(p + 13, c->exp_wh);
        put16(p + 17, c->exp_milli);
        return 19;
    }
    case GT_PULSE: {
        const gt_pulse *q = &m->u.pulse;
        p[0] = q->input;
        put32(p + 1, q->unix_s);
        put16(p + 5, q->ms);
        put32(p + 7, q->count);
        put16(p + 11, q->milli);
        put32(p + 13, q->pulses);
        return 17;
    }
    case GT_GAUGE: {
        const gt_gauge *g = &m->u.gauge;
        p[0] = g->channel;
        put32(p + 1, g->unix_s);
        put16(p + 5, g->ms);
        put32(p + 7, (uint32_t)g->power_mw);
        put32(p + 11, g->va_mva);
        put32(p + 15, g->vrms_mv);
        put32(p + 19, g->irms_ma);
        put16(p + 23, (uint16_t)g->pf_e4);
        put16(p + 25, g->freq_mhz);
        put32(p + 27, (uint32_t)g->q_mvar);
        put32(p + 31, g->qpos_varh);
        put16(p + 35, g->qpos_milli);
        put32(p + 37, g->qneg_varh);
        put16(p + 41, g->qneg_milli);
        return 43;
    }
    case GT_ACK:
        if (m->u.ack.n > GT_ACK_MAX) {
            return -1;
        }
        p[0] = m->u.ack.n;
        for (i = 0; i < m->u.ack.n; i++) {
            put16(p + 1 + 2 * i, m->u.ack.seqs[i]);
        }
        return 1 + 2 * (int)m->u.ack.n;
    case GT_NAK:
        put16(p, m->u.nak.ref_seq);
        p[2] = m->u.nak.ref_type;
        p[3] = m->u.nak.reason;
        return 4;
    case GT_CONFIG_GET:
        if (m->u.config_get.n > GT_CONFIG_GET_MAX) {
            return -1;
        }
        p[0] = m->u.config_get.target;
        p[1] = m->u.config_get.index;
        copy_bytes(p + 2, m->u.config_get.params, m->u.config_get.n);
        return 2 + (int)m->u.config_get.n;
    case GT_CONFIG_SET:
    case GT_CONFIG:
        if (m->u.config.len > GT_CONFIG_TLV_MAX) {
            return -1;
        }
        p[0] = m->u.config.target;
        p[1] = m->u.config.index;
        copy_bytes(p + 2, m->u.config.tlv, m->u.config.len);
        return 2 + (int)m->u.config.len;
    case GT_COMMIT:
        p[0] = m->u.commit.what;
        return 1;
    case GT_EVENT: {
        const gt_event *e = &m->u.event;
        if (e->text_len > GT_EVENT_MAX_TEXT) {
            return -1;
        }
        put32(p, e->unix_s);
        put16(p + 4, e->ms);
        p[6] = e->level;
        put16(p + 7, e->code);
        copy_bytes(p + 9, e->text, e->text_len);
        return 9 + (int)e->text_len;
    }
    default:
        return -1;
    }
}

size_t gt_encode(const gt_msg *m, uint8_t *out, size_t cap)
{
    uint8_t raw[GT_MAX_RAW];
    gt_msg check;
    size_t n;
    size_t k;
    int plen = pack_payload(m, raw + GT_HEADER_LEN);
    /* Refuse anything the decoders would refuse: one rule set, not two. */
    if (plen < 0 || gt_parse_payload(m->type, raw + GT_HEADER_LEN, (size_t)plen, &check) != GT_C_OK) {
        return 0;
    }
    raw[0] = GT_PROTO_VERSION;
    raw[1] = m->type;
    raw[2] = m->flags;
    put16(raw + 3, m->seq);
    n = GT_HEADER_LEN + (size_t)plen;
    put32(raw + n, gt_crc32(raw, n));
    n += GT_CRC_LEN;
    /* n <= GT_MAX_RAW < 254: COBS adds exactly one byte, plus two delimiters. */
    if (cap < n + 3) {
        return 0;
    }
    out[0] = 0;
    k = gt_cobs_encode(raw, n, out + 1);
    out[1 + k] = 0;
    return k + 2;
}

/* --------------------------------------------------------------- decoder */

void gt_decoder_init(gt_decoder *d)
{
    size_t i;
    for (i = 0; i < GT_N_COUNTERS; i++) {
        d->counts[i] = 0;
    }
    d->len = 0;
    d->overflow = 0;
}

/* wire.Decoder._take: buffer one piece of a frame, or start skipping it. */
static void take(gt_decoder *d, const uint8_t *data, size_t n)
{
    if (d->overflow || n == 0) {
        return;
    }
    if (n > (size_t)GT_MAX_ENCODED - d->len) {
        d->overflow = 1;
        d->len = 0;
        return;
    }
    copy_bytes(d->buf + d->len, data, n);
    d->len = (uint16_t)(d->len + n);
}

/* wire.Decoder._finish: a 0x00 arrived; returns 1 if m now holds a message. */
static int finish(gt_decoder *d, gt_msg *m)
{
    size_t rn;
    int rc;
    if (d->overflow) {
        d->overflow = 0;
        d->counts[GT_C_OVERSIZE]++;
        return 0;
    }
    if (d->len == 0) {
        return 0;
    }
    rc = gt_cobs_decode(d->buf, d->len, d->buf, &rn);
    d->len = 0;
    if (rc != 0) {
        d->counts[GT_C_COBS]++;
        return 0;
    }
    rc = gt_decode_raw(d->buf, rn, m);
    d->counts[rc]++;
    return rc == GT_C_OK;
}

size_t gt_decoder_feed(gt_decoder *d, const uint8_t *data, size_t n, gt_msg *out, size_t max_out,
                       size_t *used)
{
    size_t i = 0;
    size_t k = 0;
    if (max_out == 0) {
        n = 0;
    }
    while (i < n) {
        size_t j = i;
        while (j < n && data[j] != 0) {
            j++;
        }
        take(d, data + i, j - i);
        if (j == n) {
            i = n;
            break;
        }
        i = j + 1;
        if (finish(d, &out[k])) {
            k++;
            if (k == max_out) {
                break;
            }
        }
    }
    if (used != NULL) {
        *used = i;
    }
    return k;
}
