/*
 * Test driver for the C codec and kernel on another CPU (big-endian MIPS under
 * qemu-mips-static: native/mips/harness.py). It only executes: the cases and
 * their expected answers come from the Python references on the build machine.
 *
 * stdin, one case per line, numbers in decimal, bytes in hex:
 *   D <hex frame>     decode a wire frame; print the message, or the counter that
 *                     rose, then encode the message again and print that frame
 *   C <hex data>      CRC-32 of data
 *   K nch start nsets hyst n s0..s(n-1) d1 d2 d3 d4 pol fill h0..h383
 *                     one gt_kernel_block call on a fresh state whose V history
 *                     holds h0..h383 (u16 entries in memory order: the contract)
 * stdout, one line per case:
 *   D M <type> <seq> <flags> <fields...> E <hex re-encoded frame> | D R <counter>
 *   C <crc>
 *   K <consumed> <state[0..8]> <history u16 x384> <out words>
 * Fields: integers in decimal, byte strings in hex, lists in [ ].
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../gt_kernel.h"
#include "../gt_wire.h"

#define LINE_MAX_LEN 65536

static char line[LINE_MAX_LEN];
static uint8_t bytes[LINE_MAX_LEN / 2];
static uint16_t samples[GT_KERNEL_MAX_SETS * GT_KERNEL_MAX_NCH + 8];

static size_t unhex(const char *s, uint8_t *out) {
    size_t n = 0;
    while (s[0] && s[1] && s[0] != '\n' && s[0] != ' ') {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1) break;
        out[n++] = (uint8_t)v;
        s += 2;
    }
    return n;
}

static void hex(const uint8_t *p, size_t n) {
    size_t i;
    putchar(' ');
    for (i = 0; i < n; i++) printf("%02x", p[i]);
}

static void print_msg(const gt_msg *m) {
    const uint8_t t = m->type;
    size_t i;
    printf("M %u %u %u", t, m->seq, m->flags);
    if (t == GT_HELLO) {
        const gt_hello *h = &m->u.hello;
        hex(h->board_id, 8);
        printf(" %u %u %u %u %lu %u %lu %u %u", h->fw_major, h->fw_minor, h->fw_patch, h->proto,
               (unsigned long)h->boot_count, h->reset_cause, (unsigned long)h->brownout_count, h->n_ct,
               h->n_pulse);
    } else if (t == GT_TIME_SET) {
        printf(" %lu %u", (unsigned long)m->u.time_set.unix_s, m->u.time_set.ms);
    } else if (t == GT_TIME) {
        const gt_time *x = &m->u.time;
        printf(" %lu %u %lu %u", (unsigned long)x->unix_s, x->ms, (unsigned long)x->uptime_ms, x->synced);
    } else if (t == GT_COUNTER) {
        const gt_counter *c = &m->u.counter;
        printf(" %u %lu %u %lu %u %lu %u", c->sensor, (unsigned long)c->unix_s, c->ms,
               (unsigned long)c->imp_wh, c->imp_milli, (unsigned long)c->exp_wh, c->exp_milli);
    } else if (t == GT_PULSE) {
        const gt_pulse *p = &m->u.pulse;
        printf(" %u %lu %u %lu %u %lu", p->input, (unsigned long)p->unix_s, p->ms, (unsigned long)p->count,
               p->milli, (unsigned long)p->pulses);
    } else if (t == GT_GAUGE) {
        const gt_gauge *g = &m->u.gauge;
        printf(" %u %lu %u %ld %lu %lu %lu %d %u %ld %lu %u %lu %u", g->channel, (unsigned long)g->unix_s,
               g->ms, (long)g->power_mw, (unsigned long)g->va_mva, (unsigned long)g->vrms_mv,
               (unsigned long)g->irms_ma, g->pf_e4, g->freq_mhz, (long)g->q_mvar,
               (unsigned long)g->qpos_varh, g->qpos_milli, (unsigned long)g->qneg_varh, g->qneg_milli);
    } else if (t == GT_ACK) {
        printf(" [");
        for (i = 0; i < m->u.ack.n; i++) printf(" %u", m->u.ack.seqs[i]);
        printf(" ]");
    } else if (t == GT_NAK) {
        printf(" %u %u %u", m->u.nak.ref_seq, m->u.nak.ref_type, m->u.nak.reason);
    } else if (t == GT_CONFIG_GET) {
        printf(" %u %u [", m->u.config_get.target, m->u.config_get.index);
        for (i = 0; i < m->u.config_get.n; i++) printf(" %u", m->u.config_get.params[i]);
        printf(" ]");
    } else if (t == GT_CONFIG_SET || t == GT_CONFIG) {
        size_t pos = 0;
        gt_config_item it;
        printf(" %u %u [", m->u.config.target, m->u.config.index);
        while (gt_config_next(&m->u.config, &pos, &it)) {
            printf(" [ %u", it.param);
            if (it.kind == GT_K_U8) printf(" %u", it.v.u8);
            else if (it.kind == GT_K_U16) printf(" %u", it.v.u16);
            else if (it.kind == GT_K_U32) printf(" %lu", (unsigned long)it.v.u32);
            else if (it.kind == GT_K_I32) printf(" %ld", (long)it.v.i32);
            else hex(it.v.id, 16);
            printf(" ]");
        }
        printf(" ]");
    } else if (t == GT_COMMIT) {
        printf(" %u", m->u.commit.what);
    } else if (t == GT_EVENT) {
        const gt_event *e = &m->u.event;
        printf(" %lu %u %u %u", (unsigned long)e->unix_s, e->ms, e->level, e->code);
        hex(e->text, e->text_len);
    }
}

static void decode_case(const char *arg) {
    size_t n = unhex(arg, bytes), i, got;
    gt_decoder d;
    gt_msg m;
    uint8_t frame[GT_MAX_FRAME];
    gt_decoder_init(&d);
    got = gt_decoder_feed(&d, bytes, n, &m, 1, NULL);
    printf("D ");
    if (got != 1) {
        for (i = 1; i < GT_N_COUNTERS; i++)
            if (d.counts[i]) printf("R %u", (unsigned)i);
        printf("\n");
        return;
    }
    print_msg(&m);
    printf(" E");
    hex(frame, gt_encode(&m, frame, sizeof frame));
    printf("\n");
}

static long next_num(char **p) {
    char *end;
    long v = strtol(*p, &end, 10);
    if (end == *p) {
        fprintf(stderr, "bad number at: %.20s\n", *p);
        exit(2);
    }
    *p = end;
    return v;
}

static void kernel_case(char *p) {
    static int32_t state[GT_KERNEL_STATE_LEN];
    int32_t out[GT_KERNEL_OUT_LEN(GT_KERNEL_MAX_NCH)];
    uint16_t *hist = (uint16_t *)(void *)(state + GT_KERNEL_HIST_WORD);
    uint32_t nch = (uint32_t)next_num(&p), start = (uint32_t)next_num(&p), nsets = (uint32_t)next_num(&p);
    long hyst = next_num(&p), n = next_num(&p), i;
    uint32_t consumed;
    memset(state, 0, sizeof state);
    memset(out, 0, sizeof out);
    for (i = 0; i < n; i++) samples[i] = (uint16_t)next_num(&p);
    for (i = 1; i <= 4; i++) state[GT_KERNEL_DELAY + i] = (int32_t)next_num(&p);
    state[GT_KERNEL_POL] = (int32_t)next_num(&p);
    state[GT_KERNEL_FILL] = (int32_t)next_num(&p);
    state[GT_KERNEL_HYST] = (int32_t)hyst;
    for (i = 0; i < (long)GT_KERNEL_HIST_LEN; i++) hist[i] = (uint16_t)next_num(&p);
    consumed = gt_kernel_block(samples, start, nsets, nch, state, out);
    printf("K %lu", (unsigned long)consumed);
    for (i = 0; i < GT_KERNEL_HIST_WORD; i++) printf(" %ld", (long)state[i]);
    for (i = 0; i < (long)GT_KERNEL_HIST_LEN; i++) printf(" %u", hist[i]);
    for (i = 0; i < (long)GT_KERNEL_OUT_LEN(GT_KERNEL_MAX_NCH); i++) printf(" %ld", (long)out[i]);
    printf("\n");
}

int main(void) {
    while (fgets(line, sizeof line, stdin)) {
        if (line[0] == 'D' && line[1] == ' ') {
            decode_case(line + 2);
        } else if (line[0] == 'C' && line[1] == ' ') {
            size_t n = unhex(line + 2, bytes);
            printf("C %lu\n", (unsigned long)gt_crc32(bytes, n));
        } else if (line[0] == 'K' && line[1] == ' ') {
            kernel_case(line + 2);
        }
    }
    return 0;
}
