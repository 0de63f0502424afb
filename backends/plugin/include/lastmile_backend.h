/*
 * lastmile_backend.h -- the lastmile plugin C ABI, version 1.
 *
 * A vendor plugin is a shared library exporting ONE function per ABI version it speaks:
 *
 *     const LmBackendV1 *lastmile_backend_v1(void);
 *
 * It returns a static table of function pointers (never NULL, never freed). The host
 * (lastmile's Rust loader, backends/plugin) checks `abi_version == LM_ABI_VERSION_1`, the
 * `sizeof_*` fields against its own view of every struct, and that no function pointer is
 * NULL, before it calls anything. Any mismatch makes the backend "unavailable" with a
 * message naming the library and the problem; lastmile keeps working with its other
 * backends.
 *
 * The contract (see docs/adding-a-backend.md and the example plugin in backends/example-npu):
 *
 *  - The host validates the model, derives every integer constant with lastmile-core's Plan
 *    (per-channel requantization multipliers as (M, n) pairs, add multipliers, clamp bounds)
 *    and passes them in LmGraph, so a plugin never re-derives a multiplier from float scales.
 *    The float scales are passed too, for engines that want them (informational).
 *  - Integer semantics are docs/integer-spec.md: int8 NHWC activations, OHWI conv weights,
 *    [out, in] linear weights, int8 or int16 weights, int32 biases, exact accumulation,
 *    y = floor((acc * M + 2^(n-1)) / 2^n) (round half up), clamp(y + zp_out, lo, hi).
 *  - prepare() copies whatever it needs from the graph: the LmGraph and everything it
 *    points to are only valid during the call.
 *  - set_weights() hands over the codes of one parameter tensor (int8/int16 weights,
 *    int32 biases, in lastmile's layout). The host calls it for EVERY parameter after
 *    prepare and before the first forward, then (LM_WEIGHTS_UPLOAD) for a trainable
 *    parameter before a forward whenever its codes changed. The plugin converts to its
 *    own layout; the pointer is only valid during the call.
 *  - forward() runs n samples: input has n * numel(values[0]) int8 codes, output room for
 *    n * numel(values[num_values - 1]).
 *  - Every call returns LM_OK (0) or a plugin-specific nonzero error code; the host then
 *    reads last_error(instance) (a NUL-terminated UTF-8 message, valid until the next call
 *    on that instance) and reports both.
 *  - The host serializes all calls on one instance (it holds a lock), so a plugin need not
 *    be thread-safe within an instance. Distinct instances may be used concurrently.
 *
 * Forward compatibility: a future ABI adds lastmile_backend_v2() returning a new table; a
 * plugin may export several. Fields are only ever appended to a struct of a given version
 * together with its sizeof_* check, so a mismatch is detected, never silently misread.
 */
#ifndef LASTMILE_BACKEND_H
#define LASTMILE_BACKEND_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The ABI version this header describes. */
#define LM_ABI_VERSION_1 1u

/** Name of the exported entry point of ABI version 1. */
#define LM_ENTRY_POINT_V1 "lastmile_backend_v1"

/** Success. Any other value is a plugin-specific error code. */
#define LM_OK 0

/** Op kinds (LmNode.op). */
typedef enum LmOp {
    LM_OP_CONV2D = 1,         /* groups >= 1 (grouped and depthwise included) */
    LM_OP_LINEAR = 2,
    LM_OP_ADD = 3,
    LM_OP_MAX_POOL = 4,
    LM_OP_AVG_POOL = 5,
    LM_OP_GLOBAL_AVG_POOL = 6,
    LM_OP_FLATTEN = 7
} LmOp;

/** Capability bits (LmCapabilities.op_mask). Conv with groups > 1 is its own bit. */
#define LM_CAP_CONV2D (1u << 0)
#define LM_CAP_CONV2D_GROUPED (1u << 1)
#define LM_CAP_LINEAR (1u << 2)
#define LM_CAP_ADD (1u << 3)
#define LM_CAP_MAX_POOL (1u << 4)
#define LM_CAP_AVG_POOL (1u << 5)
#define LM_CAP_GLOBAL_AVG_POOL (1u << 6)
#define LM_CAP_FLATTEN (1u << 7)

/** Weight widths (LmCapabilities.weight_bits_mask). */
#define LM_CAP_W8 (1u << 0)
#define LM_CAP_W16 (1u << 1)

/** Element types of parameter tensors. */
typedef enum LmDType {
    LM_DTYPE_I8 = 1,
    LM_DTYPE_I16 = 2,
    LM_DTYPE_I32 = 3
} LmDType;

/** What a parameter tensor is. */
typedef enum LmRole {
    LM_ROLE_WEIGHT = 1,
    LM_ROLE_BIAS = 2
} LmRole;

/** How changed trainable weights reach the engine (LmCapabilities.weight_updates). */
typedef enum LmWeightUpdates {
    /** The host calls set_weights for a trainable tensor before a forward whenever its codes
        changed since the last upload (it keeps a copy to compare). The only mode of ABI v1;
        later versions may add others (e.g. reading host memory in place). */
    LM_WEIGHTS_UPLOAD = 1
} LmWeightUpdates;

/** Whether outputs equal the reference backend's bit for bit. */
typedef enum LmExactness {
    LM_EXACT_BIT_EXACT = 1,
    LM_EXACT_WITHIN_LSB = 2
} LmExactness;

/** A fixed-point multiplier: r ~= multiplier * 2^-shift, multiplier in [2^30, 2^31),
    shift in [1, 62]. */
typedef struct LmMultiplier {
    int32_t multiplier;
    uint32_t shift;
} LmMultiplier;

/** What the plugin is and can do. The host zeroes it and sets struct_size first. */
typedef struct LmCapabilities {
    uint32_t struct_size;
    /** LM_CAP_* op bits. */
    uint32_t op_mask;
    /** LM_CAP_W8 | LM_CAP_W16. */
    uint32_t weight_bits_mask;
    /** LmWeightUpdates. */
    uint32_t weight_updates;
    /** LmExactness. */
    uint32_t exactness;
    /** Largest |difference| from the reference in output codes (LM_EXACT_WITHIN_LSB). */
    uint32_t max_lsb;
    /** Worker threads a forward may use. */
    uint32_t threads;
    /** Short stable backend name, e.g. "example-npu" (what --backend takes). Static. */
    const char *name;
    /** Engine / SDK version, e.g. "1.0.0". Static. */
    const char *version;
    /** Vendor or a one-line description. Static. */
    const char *description;
    /** Human-readable cost of a weight update, e.g. "re-layout OHWI->OIHW". Static, may be NULL. */
    const char *update_cost;
    /** Where and why outputs differ from the reference (LM_EXACT_WITHIN_LSB). Static, may be NULL. */
    const char *exactness_note;
} LmCapabilities;

/** One value (tensor flowing between nodes); index 0 is the graph input, node i writes
    value i + 1. Shapes are per sample: [H, W, C] (rank 3) or [F] (rank 1). */
typedef struct LmValue {
    uint32_t rank;
    uint32_t shape[3];
    /** Activation quantization (informational: the host derived every constant). */
    float scale;
    int32_t zero_point;
} LmValue;

/** One parameter tensor (weights or bias). Its codes come with set_weights. */
typedef struct LmParam {
    /** NUL-terminated, e.g. "conv1.weight". */
    const char *name;
    /** LmRole. */
    uint32_t role;
    /** LmDType. */
    uint32_t dtype;
    /** Nonzero if training changes it (it is then uploaded before every forward). */
    uint32_t trainable;
    /** 4 (conv OHWI), 2 (linear [out, in]) or 1 (bias). */
    uint32_t rank;
    uint32_t shape[4];
    /** Product of the shape. */
    uint64_t numel;
    /** Per-output-channel weight scales (numel = shape[0]); NULL for biases. Informational. */
    const float *scales;
} LmParam;

/** One node. Fields not used by the op are zero (or -1 for param indices). */
typedef struct LmNode {
    /** NUL-terminated, unique. */
    const char *name;
    /** LmOp. */
    uint32_t op;
    /** 1, or 2 for LM_OP_ADD. */
    uint32_t num_inputs;
    /** Value indices read (earlier values only). */
    uint32_t inputs[2];
    /** Weight / bias parameter indices (conv, linear); -1 when absent. */
    int32_t weight;
    int32_t bias;
    /** Conv: [stride_h, stride_w], [top, left, bottom, right], [dil_h, dil_w], groups.
        Pools: stride, padding and kernel [kh, kw]; padded positions are excluded. */
    uint32_t stride[2];
    uint32_t padding[4];
    uint32_t dilation[2];
    uint32_t kernel[2];
    uint32_t groups;
    /** Conv / linear requantization: one multiplier per output channel (num_multipliers =
        C_out), input and output zero points, clamp [lo, hi] (fused ReLU/ReLU6 included). */
    const LmMultiplier *multipliers;
    uint32_t num_multipliers;
    int32_t zp_in;
    int32_t zp_out;
    int32_t lo;
    int32_t hi;
    /** Add: out = clamp(M_out(M_a((a - zp_a) << add_left_shift) + M_b((b - zp_b) <<
        add_left_shift)) + zp_out, lo, hi), each M round-half-up as above. */
    LmMultiplier mult_a;
    LmMultiplier mult_b;
    LmMultiplier mult_out;
    int32_t zp_a;
    int32_t zp_b;
} LmNode;

/** A prepared-to-be graph. Valid only during prepare(). */
typedef struct LmGraph {
    uint32_t struct_size;
    /** 8 (8w8a) or 16 (16w8a). */
    uint32_t weight_bits;
    /** Left shift applied to add inputs before rescaling (20). */
    uint32_t add_left_shift;
    uint32_t num_values;
    const LmValue *values;
    uint32_t num_nodes;
    const LmNode *nodes;
    uint32_t num_params;
    const LmParam *params;
} LmGraph;

/** Opaque plugin objects. */
typedef struct LmInstance LmInstance;
typedef struct LmModel LmModel;

/** The function table of ABI version 1. */
typedef struct LmBackendV1 {
    /** LM_ABI_VERSION_1. */
    uint32_t abi_version;
    /** sizeof(LmBackendV1), sizeof(LmCapabilities), ... as the plugin was compiled. */
    uint32_t sizeof_table;
    uint32_t sizeof_capabilities;
    uint32_t sizeof_graph;
    uint32_t sizeof_node;
    uint32_t sizeof_param;
    uint32_t sizeof_value;
    uint32_t sizeof_multiplier;

    /** Creates an instance (opens the device). On failure *out may be set for last_error,
        or left NULL; the host then calls destroy(*out) if it is not NULL. */
    int32_t (*create)(LmInstance **out);
    /** Fills *caps (struct_size set by the host). */
    int32_t (*capabilities)(LmInstance *inst, LmCapabilities *caps);
    /** Compiles a graph. */
    int32_t (*prepare)(LmInstance *inst, const LmGraph *graph, LmModel **out);
    /** Uploads the codes of parameter `param` (numel elements of its dtype). */
    int32_t (*set_weights)(LmInstance *inst, LmModel *model, uint32_t param, const void *data,
                           uint64_t numel);
    /** Runs n samples. */
    int32_t (*forward)(LmInstance *inst, LmModel *model, const int8_t *input, uint64_t input_len,
                       uint64_t n, int8_t *output, uint64_t output_len);
    /** Message of the last failed call on this instance ("" if none). Never NULL. */
    const char *(*last_error)(LmInstance *inst);
    /** Frees a model (NULL is a no-op). */
    void (*release_model)(LmInstance *inst, LmModel *model);
    /** Frees an instance after its models (NULL is a no-op). */
    void (*destroy)(LmInstance *inst);
} LmBackendV1;

/** The entry point of ABI version 1. */
typedef const LmBackendV1 *(*LmEntryPointV1)(void);

#ifdef __cplusplus
}
#endif

#endif /* LASTMILE_BACKEND_H */
