/*
 * example_npu.c -- an example vendor plugin for lastmile, written like a typical NPU SDK.
 *
 * It speaks the plugin C ABI v1 (backends/plugin/include/lastmile_backend.h) and:
 *  - keeps its OWN weight layout: conv weights re-laid out from lastmile's OHWI to OIHW and
 *    widened to int32 "device words", linear weights transposed to [in][out], biases int64.
 *    So every change of a trainable tensor must be uploaded (set_weights) before a forward:
 *    it declares LM_WEIGHTS_UPLOAD, and refuses to run while a tensor was never uploaded;
 *  - has its own error codes (NPU_E_*), turned into messages by last_error;
 *  - implements the integer spec (docs/integer-spec.md) with int64 accumulation and the same
 *    round-half-up requantization (128-bit product), so it is bit-exact with the reference.
 *
 * Build-time switches produce the deliberately broken variants used by the loader's tests:
 *  EXAMPLE_NPU_BAD_ABI        reports abi_version 99
 *  EXAMPLE_NPU_NO_ENTRY       exports the entry point under a different name
 *  EXAMPLE_NPU_NULL_FORWARD   leaves the forward function pointer NULL
 *  EXAMPLE_NPU_BAD_SIZES      reports a different sizeof(LmNode)
 *  EXAMPLE_NPU_FAIL_CREATE    create() fails (the device cannot be opened)
 *  EXAMPLE_NPU_FAIL_PREPARE   prepare() fails (the compiler rejects the graph)
 *  EXAMPLE_NPU_FAIL_FORWARD   the 3rd forward() fails (device lost)
 */
#include "lastmile_backend.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef __SIZEOF_INT128__
#error "example_npu.c needs a compiler with __int128 (the requantization product has 71 bits)"
#endif

#if defined(_WIN32)
#define NPU_EXPORT __declspec(dllexport)
#else
#define NPU_EXPORT __attribute__((visibility("default")))
#endif

/* ---- the "SDK" error codes ---------------------------------------------------------- */
enum {
    NPU_OK = 0,
    NPU_E_NOMEM = 1001,
    NPU_E_DEVICE = 1002,
    NPU_E_COMPILE = 1003,
    NPU_E_ARG = 1004,
    NPU_E_NOT_UPLOADED = 1005,
    NPU_E_DEVICE_LOST = 1006,
    NPU_E_UNSUPPORTED = 1007
};

static const char *npu_code_name(int code) {
    switch (code) {
    case NPU_E_NOMEM: return "NPU_E_NOMEM";
    case NPU_E_DEVICE: return "NPU_E_DEVICE";
    case NPU_E_COMPILE: return "NPU_E_COMPILE";
    case NPU_E_ARG: return "NPU_E_ARG";
    case NPU_E_NOT_UPLOADED: return "NPU_E_NOT_UPLOADED";
    case NPU_E_DEVICE_LOST: return "NPU_E_DEVICE_LOST";
    case NPU_E_UNSUPPORTED: return "NPU_E_UNSUPPORTED";
    default: return "NPU_E_UNKNOWN";
    }
}

struct LmInstance {
    char error[512];
    unsigned long forwards;
};

typedef struct {
    uint32_t op, num_inputs, inputs[2];
    int32_t weight, bias;
    uint32_t stride[2], padding[4], dilation[2], kernel[2], groups;
    LmMultiplier *mult;
    uint32_t num_mult;
    int32_t zp_in, zp_out, lo, hi;
    LmMultiplier mult_a, mult_b, mult_out;
    int32_t zp_a, zp_b;
} NpuNode;

typedef struct {
    uint32_t role, dtype, rank, shape[4];
    uint64_t numel;
    int uploaded;
    void *device; /* int32 OIHW conv / int32 [in][out] linear / int64 bias */
} NpuParam;

struct LmModel {
    uint32_t add_left_shift;
    uint32_t num_values, num_nodes, num_params;
    uint64_t *value_numel; /* per sample */
    uint32_t (*value_shape)[3];
    NpuNode *nodes;
    NpuParam *params;
    int8_t **buffers; /* one per value, grown on demand */
    uint64_t *buffer_cap;
};

static int fail(LmInstance *inst, int code, const char *fmt, ...) {
    if (inst) {
        int k = snprintf(inst->error, sizeof inst->error, "%s (%d): ", npu_code_name(code), code);
        if (k < 0) k = 0;
        if ((size_t)k < sizeof inst->error) {
            va_list ap;
            va_start(ap, fmt);
            vsnprintf(inst->error + k, sizeof inst->error - (size_t)k, fmt, ap);
            va_end(ap);
        }
    }
    return code;
}

static void ok(LmInstance *inst) { inst->error[0] = '\0'; }

/* ---- arithmetic of the integer spec ------------------------------------------------- */

/* floor((acc * M + 2^(n-1)) / 2^n): round half up, exact (128-bit product). */
static __int128 apply_mult(LmMultiplier m, int64_t acc) {
    __int128 prod = (__int128)acc * (__int128)m.multiplier;
    __int128 round = (__int128)1 << (m.shift - 1);
    return (prod + round) >> m.shift; /* arithmetic shift = floor */
}

static int8_t requantize(LmMultiplier m, int64_t acc, int32_t zp, int32_t lo, int32_t hi) {
    __int128 y = apply_mult(m, acc) + zp;
    if (y < lo) y = lo;
    if (y > hi) y = hi;
    return (int8_t)y;
}

static int64_t div_half_away(int64_t sum, int64_t count) {
    return sum >= 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
}

/* Input coordinate of output o, tap k; -1 in padding. */
static int64_t tap(uint64_t o, uint64_t k, uint64_t stride, uint64_t dil, uint64_t pad, uint64_t size) {
    int64_t i = (int64_t)(o * stride + k * dil) - (int64_t)pad;
    return (i >= 0 && (uint64_t)i < size) ? i : -1;
}

/* ---- ABI functions ------------------------------------------------------------------ */

static int32_t npu_create(LmInstance **out) {
    LmInstance *inst = calloc(1, sizeof *inst);
    if (!inst) return NPU_E_NOMEM;
    *out = inst;
#ifdef EXAMPLE_NPU_FAIL_CREATE
    return fail(inst, NPU_E_DEVICE, "cannot open /dev/example-npu0: no such device");
#else
    return NPU_OK;
#endif
}

static int32_t npu_capabilities(LmInstance *inst, LmCapabilities *caps) {
    if (!caps || caps->struct_size < sizeof *caps)
        return fail(inst, NPU_E_ARG, "capabilities struct is too small");
    caps->op_mask = LM_CAP_CONV2D | LM_CAP_CONV2D_GROUPED | LM_CAP_LINEAR | LM_CAP_ADD |
                    LM_CAP_MAX_POOL | LM_CAP_AVG_POOL | LM_CAP_GLOBAL_AVG_POOL | LM_CAP_FLATTEN;
    caps->weight_bits_mask = LM_CAP_W8 | LM_CAP_W16;
    caps->weight_updates = LM_WEIGHTS_UPLOAD;
    caps->exactness = LM_EXACT_BIT_EXACT;
    caps->max_lsb = 0;
    caps->threads = 1;
    caps->name = "example-npu";
    caps->version = "1.0.0";
    caps->description = "example vendor NPU plugin in C (OIHW int32 device layout, C ABI v1)";
    caps->update_cost = "re-lays out each trainable tensor (OHWI->OIHW, widen to int32) per forward";
    caps->exactness_note = NULL;
    ok(inst);
    return NPU_OK;
}

static uint64_t dtype_size(uint32_t dtype) {
    return dtype == LM_DTYPE_I8 ? 1 : dtype == LM_DTYPE_I16 ? 2 : dtype == LM_DTYPE_I32 ? 4 : 0;
}

static void free_model(LmModel *m) {
    if (!m) return;
    if (m->nodes)
        for (uint32_t i = 0; i < m->num_nodes; i++) free(m->nodes[i].mult);
    if (m->params)
        for (uint32_t i = 0; i < m->num_params; i++) free(m->params[i].device);
    if (m->buffers)
        for (uint32_t i = 0; i < m->num_values; i++) free(m->buffers[i]);
    free(m->value_numel);
    free(m->value_shape);
    free(m->nodes);
    free(m->params);
    free(m->buffers);
    free(m->buffer_cap);
    free(m);
}

static int32_t npu_prepare(LmInstance *inst, const LmGraph *g, LmModel **out) {
    *out = NULL;
    if (!g || g->struct_size != sizeof *g)
        return fail(inst, NPU_E_ARG, "graph struct has size %u, this SDK expects %u",
                    g ? g->struct_size : 0, (unsigned)sizeof *g);
#ifdef EXAMPLE_NPU_FAIL_PREPARE
    return fail(inst, NPU_E_COMPILE, "graph compiler rejected node '%s': out of on-chip SRAM",
                g->num_nodes ? g->nodes[0].name : "?");
#endif
    if (g->num_values != g->num_nodes + 1)
        return fail(inst, NPU_E_COMPILE, "%u values for %u nodes", g->num_values, g->num_nodes);
    LmModel *m = calloc(1, sizeof *m);
    if (!m) return fail(inst, NPU_E_NOMEM, "out of memory");
    m->add_left_shift = g->add_left_shift;
    m->num_values = g->num_values;
    m->num_nodes = g->num_nodes;
    m->num_params = g->num_params;
    m->value_numel = calloc(g->num_values, sizeof *m->value_numel);
    m->value_shape = calloc(g->num_values, sizeof *m->value_shape);
    m->nodes = calloc(g->num_nodes ? g->num_nodes : 1, sizeof *m->nodes);
    m->params = calloc(g->num_params ? g->num_params : 1, sizeof *m->params);
    m->buffers = calloc(g->num_values, sizeof *m->buffers);
    m->buffer_cap = calloc(g->num_values, sizeof *m->buffer_cap);
    if (!m->value_numel || !m->value_shape || !m->nodes || !m->params || !m->buffers || !m->buffer_cap) {
        free_model(m);
        return fail(inst, NPU_E_NOMEM, "out of memory");
    }
    for (uint32_t v = 0; v < g->num_values; v++) {
        const LmValue *val = &g->values[v];
        uint64_t numel = 1;
        for (uint32_t d = 0; d < 3; d++) m->value_shape[v][d] = 1;
        if (val->rank == 3) {
            for (uint32_t d = 0; d < 3; d++) m->value_shape[v][d] = val->shape[d];
        } else if (val->rank == 1) {
            m->value_shape[v][2] = val->shape[0]; /* [F] as [1, 1, F] */
        } else {
            free_model(m);
            return fail(inst, NPU_E_UNSUPPORTED, "value %u has rank %u", v, val->rank);
        }
        for (uint32_t d = 0; d < 3; d++) numel *= m->value_shape[v][d];
        m->value_numel[v] = numel;
    }
    for (uint32_t p = 0; p < g->num_params; p++) {
        const LmParam *src = &g->params[p];
        NpuParam *dst = &m->params[p];
        dst->role = src->role;
        dst->dtype = src->dtype;
        dst->rank = src->rank;
        memcpy(dst->shape, src->shape, sizeof dst->shape);
        dst->numel = src->numel;
        if (dtype_size(src->dtype) == 0) {
            free_model(m);
            return fail(inst, NPU_E_UNSUPPORTED, "parameter '%s' has dtype %u", src->name, src->dtype);
        }
        size_t elem = src->role == LM_ROLE_BIAS ? sizeof(int64_t) : sizeof(int32_t);
        dst->device = calloc(src->numel ? src->numel : 1, elem);
        if (!dst->device) {
            free_model(m);
            return fail(inst, NPU_E_NOMEM, "out of memory for '%s'", src->name);
        }
    }
    for (uint32_t i = 0; i < g->num_nodes; i++) {
        const LmNode *s = &g->nodes[i];
        NpuNode *d = &m->nodes[i];
        if (s->op < LM_OP_CONV2D || s->op > LM_OP_FLATTEN) {
            free_model(m);
            return fail(inst, NPU_E_UNSUPPORTED, "node '%s': op %u", s->name, s->op);
        }
        d->op = s->op;
        d->num_inputs = s->num_inputs;
        d->inputs[0] = s->inputs[0];
        d->inputs[1] = s->inputs[1];
        d->weight = s->weight;
        d->bias = s->bias;
        memcpy(d->stride, s->stride, sizeof d->stride);
        memcpy(d->padding, s->padding, sizeof d->padding);
        memcpy(d->dilation, s->dilation, sizeof d->dilation);
        memcpy(d->kernel, s->kernel, sizeof d->kernel);
        d->groups = s->groups;
        d->zp_in = s->zp_in;
        d->zp_out = s->zp_out;
        d->lo = s->lo;
        d->hi = s->hi;
        d->mult_a = s->mult_a;
        d->mult_b = s->mult_b;
        d->mult_out = s->mult_out;
        d->zp_a = s->zp_a;
        d->zp_b = s->zp_b;
        d->num_mult = s->num_multipliers;
        if (s->num_multipliers) {
            d->mult = malloc(s->num_multipliers * sizeof *d->mult);
            if (!d->mult) {
                free_model(m);
                return fail(inst, NPU_E_NOMEM, "out of memory");
            }
            memcpy(d->mult, s->multipliers, s->num_multipliers * sizeof *d->mult);
        }
        if ((s->op == LM_OP_CONV2D || s->op == LM_OP_LINEAR) &&
            (s->weight < 0 || (uint32_t)s->weight >= g->num_params ||
             (s->bias >= 0 && (uint32_t)s->bias >= g->num_params))) {
            free_model(m);
            return fail(inst, NPU_E_COMPILE, "node '%s': bad parameter index", s->name);
        }
    }
    *out = m;
    ok(inst);
    return NPU_OK;
}

static int64_t load_code(uint32_t dtype, const void *data, uint64_t i) {
    switch (dtype) {
    case LM_DTYPE_I8: return ((const int8_t *)data)[i];
    case LM_DTYPE_I16: return ((const int16_t *)data)[i];
    default: return ((const int32_t *)data)[i];
    }
}

static int32_t npu_set_weights(LmInstance *inst, LmModel *m, uint32_t param, const void *data,
                               uint64_t numel) {
    if (!m || param >= m->num_params)
        return fail(inst, NPU_E_ARG, "no parameter #%u", param);
    NpuParam *p = &m->params[param];
    if (numel != p->numel || (!data && numel))
        return fail(inst, NPU_E_ARG, "parameter #%u has %llu elements, got %llu", param,
                    (unsigned long long)p->numel, (unsigned long long)numel);
    if (p->role == LM_ROLE_BIAS) {
        int64_t *dst = p->device;
        for (uint64_t i = 0; i < numel; i++) dst[i] = load_code(p->dtype, data, i);
    } else if (p->rank == 4) {
        /* OHWI (lastmile) -> OIHW (device) */
        uint64_t O = p->shape[0], H = p->shape[1], W = p->shape[2], I = p->shape[3];
        int32_t *dst = p->device;
        for (uint64_t o = 0; o < O; o++)
            for (uint64_t y = 0; y < H; y++)
                for (uint64_t x = 0; x < W; x++)
                    for (uint64_t c = 0; c < I; c++)
                        dst[((o * I + c) * H + y) * W + x] =
                            (int32_t)load_code(p->dtype, data, ((o * H + y) * W + x) * I + c);
    } else if (p->rank == 2) {
        /* [out][in] -> [in][out] */
        uint64_t O = p->shape[0], I = p->shape[1];
        int32_t *dst = p->device;
        for (uint64_t o = 0; o < O; o++)
            for (uint64_t c = 0; c < I; c++) dst[c * O + o] = (int32_t)load_code(p->dtype, data, o * I + c);
    } else {
        return fail(inst, NPU_E_UNSUPPORTED, "weight #%u of rank %u", param, p->rank);
    }
    p->uploaded = 1;
    ok(inst);
    return NPU_OK;
}

static int grow(LmModel *m, uint32_t v, uint64_t len) {
    if (m->buffer_cap[v] >= len) return 1;
    int8_t *b = realloc(m->buffers[v], len ? len : 1);
    if (!b) return 0;
    m->buffers[v] = b;
    m->buffer_cap[v] = len;
    return 1;
}

static void run_conv(const LmModel *m, const NpuNode *nd, const int8_t *x, const uint32_t *xs,
                     int8_t *y, const uint32_t *ys, uint64_t n) {
    const NpuParam *wp = &m->params[nd->weight];
    const int32_t *w = wp->device; /* OIHW */
    const int64_t *b = nd->bias >= 0 ? m->params[nd->bias].device : NULL;
    uint64_t H = xs[0], W = xs[1], C = xs[2], HO = ys[0], WO = ys[1], CO = ys[2];
    uint64_t KH = wp->shape[1], KW = wp->shape[2], CPG = wp->shape[3];
    uint64_t OPG = CO / nd->groups;
    int64_t zp = nd->zp_in;
    for (uint64_t s = 0; s < n; s++)
        for (uint64_t oy = 0; oy < HO; oy++)
            for (uint64_t ox = 0; ox < WO; ox++)
                for (uint64_t co = 0; co < CO; co++) {
                    uint64_t g = co / OPG;
                    int64_t acc = b ? b[co] : 0;
                    for (uint64_t ci = 0; ci < CPG; ci++)
                        for (uint64_t ky = 0; ky < KH; ky++) {
                            int64_t iy = tap(oy, ky, nd->stride[0], nd->dilation[0], nd->padding[0], H);
                            if (iy < 0) continue;
                            for (uint64_t kx = 0; kx < KW; kx++) {
                                int64_t ix = tap(ox, kx, nd->stride[1], nd->dilation[1], nd->padding[1], W);
                                if (ix < 0) continue;
                                int64_t xv = x[((s * H + (uint64_t)iy) * W + (uint64_t)ix) * C + g * CPG + ci];
                                acc += (xv - zp) * (int64_t)w[((co * CPG + ci) * KH + ky) * KW + kx];
                            }
                        }
                    y[((s * HO + oy) * WO + ox) * CO + co] =
                        requantize(nd->mult[co], acc, nd->zp_out, nd->lo, nd->hi);
                }
}

static void run_linear(const LmModel *m, const NpuNode *nd, const int8_t *x, uint64_t F,
                       int8_t *y, uint64_t O, uint64_t n) {
    const int32_t *w = m->params[nd->weight].device; /* [in][out] */
    const int64_t *b = nd->bias >= 0 ? m->params[nd->bias].device : NULL;
    int64_t zp = nd->zp_in;
    for (uint64_t s = 0; s < n; s++)
        for (uint64_t o = 0; o < O; o++) {
            int64_t acc = b ? b[o] : 0;
            for (uint64_t k = 0; k < F; k++) acc += ((int64_t)x[s * F + k] - zp) * (int64_t)w[k * O + o];
            y[s * O + o] = requantize(nd->mult[o], acc, nd->zp_out, nd->lo, nd->hi);
        }
}

static void run_pool(const NpuNode *nd, const int8_t *x, const uint32_t *xs, int8_t *y,
                     const uint32_t *ys, uint64_t n, int is_max) {
    uint64_t H = xs[0], W = xs[1], C = xs[2], HO = ys[0], WO = ys[1];
    for (uint64_t s = 0; s < n; s++)
        for (uint64_t oy = 0; oy < HO; oy++)
            for (uint64_t ox = 0; ox < WO; ox++)
                for (uint64_t c = 0; c < C; c++) {
                    int best = -128;
                    int64_t sum = 0, count = 0;
                    for (uint64_t ky = 0; ky < nd->kernel[0]; ky++) {
                        int64_t iy = tap(oy, ky, nd->stride[0], 1, nd->padding[0], H);
                        if (iy < 0) continue;
                        for (uint64_t kx = 0; kx < nd->kernel[1]; kx++) {
                            int64_t ix = tap(ox, kx, nd->stride[1], 1, nd->padding[1], W);
                            if (ix < 0) continue;
                            int v = x[((s * H + (uint64_t)iy) * W + (uint64_t)ix) * C + c];
                            if (v > best) best = v;
                            sum += v;
                            count++;
                        }
                    }
                    y[((s * HO + oy) * WO + ox) * C + c] =
                        (int8_t)(is_max ? best : div_half_away(sum, count > 0 ? count : 1));
                }
}

__attribute__((unused)) static int32_t npu_forward(LmInstance *inst, LmModel *m, const int8_t *input, uint64_t input_len,
                           uint64_t n, int8_t *output, uint64_t output_len) {
    if (!m) return fail(inst, NPU_E_ARG, "no model");
    inst->forwards++;
#ifdef EXAMPLE_NPU_FAIL_FORWARD
    if (inst->forwards >= 3)
        return fail(inst, NPU_E_DEVICE_LOST, "device stopped responding during forward #%lu",
                    inst->forwards);
#endif
    if (input_len != n * m->value_numel[0])
        return fail(inst, NPU_E_ARG, "input has %llu codes, expected %llu",
                    (unsigned long long)input_len, (unsigned long long)(n * m->value_numel[0]));
    if (output_len != n * m->value_numel[m->num_values - 1])
        return fail(inst, NPU_E_ARG, "output has room for %llu codes, expected %llu",
                    (unsigned long long)output_len,
                    (unsigned long long)(n * m->value_numel[m->num_values - 1]));
    for (uint32_t p = 0; p < m->num_params; p++)
        if (!m->params[p].uploaded)
            return fail(inst, NPU_E_NOT_UPLOADED, "parameter #%u was never uploaded", p);
    if (!grow(m, 0, input_len)) return fail(inst, NPU_E_NOMEM, "out of memory");
    if (input_len) memcpy(m->buffers[0], input, input_len);
    for (uint32_t i = 0; i < m->num_nodes; i++) {
        const NpuNode *nd = &m->nodes[i];
        uint32_t xi = nd->inputs[0], yi = i + 1;
        uint64_t len = n * m->value_numel[yi];
        if (!grow(m, yi, len)) return fail(inst, NPU_E_NOMEM, "out of memory");
        const int8_t *x = m->buffers[xi];
        int8_t *y = m->buffers[yi];
        const uint32_t *xs = m->value_shape[xi], *ys = m->value_shape[yi];
        switch (nd->op) {
        case LM_OP_CONV2D: run_conv(m, nd, x, xs, y, ys, n); break;
        case LM_OP_LINEAR: run_linear(m, nd, x, m->value_numel[xi], y, m->value_numel[yi], n); break;
        case LM_OP_ADD: {
            const int8_t *b = m->buffers[nd->inputs[1]];
            for (uint64_t k = 0; k < len; k++) {
                int64_t sa = (int64_t)apply_mult(nd->mult_a, ((int64_t)x[k] - nd->zp_a) << m->add_left_shift);
                int64_t sb = (int64_t)apply_mult(nd->mult_b, ((int64_t)b[k] - nd->zp_b) << m->add_left_shift);
                y[k] = requantize(nd->mult_out, sa + sb, nd->zp_out, nd->lo, nd->hi);
            }
            break;
        }
        case LM_OP_MAX_POOL: run_pool(nd, x, xs, y, ys, n, 1); break;
        case LM_OP_AVG_POOL: run_pool(nd, x, xs, y, ys, n, 0); break;
        case LM_OP_GLOBAL_AVG_POOL: {
            uint64_t HW = (uint64_t)xs[0] * xs[1], C = xs[2];
            for (uint64_t s = 0; s < n; s++)
                for (uint64_t c = 0; c < C; c++) {
                    int64_t sum = 0;
                    for (uint64_t p = 0; p < HW; p++) sum += x[(s * HW + p) * C + c];
                    y[s * C + c] = (int8_t)div_half_away(sum, (int64_t)HW);
                }
            break;
        }
        case LM_OP_FLATTEN: memcpy(y, x, len); break;
        default: return fail(inst, NPU_E_UNSUPPORTED, "op %u", nd->op);
        }
    }
    memcpy(output, m->buffers[m->num_values - 1], output_len);
    ok(inst);
    return NPU_OK;
}

static const char *npu_last_error(LmInstance *inst) { return inst ? inst->error : "no instance"; }

static void npu_release_model(LmInstance *inst, LmModel *m) {
    (void)inst;
    free_model(m);
}

static void npu_destroy(LmInstance *inst) { free(inst); }

static const LmBackendV1 TABLE = {
#ifdef EXAMPLE_NPU_BAD_ABI
    .abi_version = 99,
#else
    .abi_version = LM_ABI_VERSION_1,
#endif
    .sizeof_table = sizeof(LmBackendV1),
    .sizeof_capabilities = sizeof(LmCapabilities),
    .sizeof_graph = sizeof(LmGraph),
#ifdef EXAMPLE_NPU_BAD_SIZES
    .sizeof_node = sizeof(LmNode) + 8,
#else
    .sizeof_node = sizeof(LmNode),
#endif
    .sizeof_param = sizeof(LmParam),
    .sizeof_value = sizeof(LmValue),
    .sizeof_multiplier = sizeof(LmMultiplier),
    .create = npu_create,
    .capabilities = npu_capabilities,
    .prepare = npu_prepare,
    .set_weights = npu_set_weights,
#ifdef EXAMPLE_NPU_NULL_FORWARD
    .forward = NULL,
#else
    .forward = npu_forward,
#endif
    .last_error = npu_last_error,
    .release_model = npu_release_model,
    .destroy = npu_destroy,
};

#ifdef EXAMPLE_NPU_NO_ENTRY
NPU_EXPORT const LmBackendV1 *lastmile_backend_v0_typo(void) { return &TABLE; }
#else
NPU_EXPORT const LmBackendV1 *lastmile_backend_v1(void) { return &TABLE; }
#endif
