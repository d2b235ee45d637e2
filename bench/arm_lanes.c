/* A qemu-user TCG plugin (plugin API version 1, qemu 7.2) for bench/compressed_arm.py: counts the aarch64
 * instructions a program executes, and the lanes of the vector instructions that can do a layer's
 * multiply-accumulates, float or integer (../shared/tools/armcount counts float FMAs only):
 *   fmla/fmls (vector, by element), fadd (vector), add/mla (vector, mla by element), saddw/uaddw/saddl/uaddl,
 *   smlal/umlal (vector, by element), and sdot/udot (vector, by element; 4 multiply-adds per 32-bit lane).
 * Encodings from the ARMv8-A Advanced SIMD tables. Counts are summed inline (not atomic: run one thread).
 * Build: cc -shared -fPIC -O2 -o arm_lanes.so arm_lanes.c
 * Use:   qemu-aarch64 -plugin ./arm_lanes.so -d plugin -D counts.json prog args...
 * Output: {"insns": N, "mac_insns": M, "mac_lanes": L} */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
__attribute__((visibility("default"))) int qemu_plugin_version = 1;

extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, struct qemu_plugin_tb *));
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *, size_t);
extern const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *);
extern void qemu_plugin_register_vcpu_insn_exec_inline(struct qemu_plugin_insn *, enum qemu_plugin_op, void *, uint64_t);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, void *), void *);
extern void qemu_plugin_outs(const char *);

static uint64_t insns, mac_insns, mac_lanes;

/* Lanes of an integer vector of element size `size` (0: bytes .. 3: doublewords), 64 or 128 bits wide (q). */
static int int_lanes(int q, int size) { return (q ? 16 : 8) >> size; }
/* Lanes of a float vector: sz 0 single, 1 double. */
static int fp_lanes(int q, int sz) { return sz ? (q ? 2 : 1) : (q ? 4 : 2); }

/* Multiply-accumulates (or accumulating adds) one executed instruction does, 0 for any other instruction. */
static int mac_lanes_of(uint32_t w) {
    int q = (w >> 30) & 1, size = (w >> 22) & 3, sz = (w >> 22) & 1;
    if ((w & 0xBF20FC00u) == 0x0E20CC00u || (w & 0xBF20FC00u) == 0x0EA0CC00u) return fp_lanes(q, sz); /* fmla/fmls */
    if ((w & 0xBF80B400u) == 0x0F801000u) return fp_lanes(q, sz);                                     /* by element */
    if ((w & 0xBFA0FC00u) == 0x0E20D400u) return fp_lanes(q, sz);                                     /* fadd vector */
    if ((w & 0xBF20FC00u) == 0x0E208400u) return int_lanes(q, size);                                  /* add vector */
    if ((w & 0xBF20FC00u) == 0x0E209400u) return int_lanes(q, size);                                  /* mla vector */
    if ((w & 0xBF00F400u) == 0x2F000000u) return int_lanes(q, size);                                  /* mla element */
    if ((w & 0x9F20EC00u) == 0x0E200000u) return 8 >> size;      /* saddl/uaddl (0000), saddw/uaddw (0001) */
    if ((w & 0x9F20FC00u) == 0x0E208000u) return 8 >> size;      /* smlal/umlal vector (1000) */
    if ((w & 0x9F00F400u) == 0x0F002000u) return 8 >> size;      /* smlal/umlal by element */
    if ((w & 0x9FE0FC00u) == 0x0E809400u) return 4 * (q ? 4 : 2); /* sdot/udot vector */
    if ((w & 0x9FC0F400u) == 0x0F80E000u) return 4 * (q ? 4 : 2); /* sdot/udot by element */
    return 0;
}

static void on_tb(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
    (void)id;
    size_t n = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < n; i++) {
        struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
        uint32_t w;
        memcpy(&w, qemu_plugin_insn_data(insn), 4);
        qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &insns, 1);
        int lanes = mac_lanes_of(w);
        if (lanes) {
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &mac_insns, 1);
            qemu_plugin_register_vcpu_insn_exec_inline(insn, QEMU_PLUGIN_INLINE_ADD_U64, &mac_lanes, lanes);
        }
    }
}

static void on_exit_cb(qemu_plugin_id_t id, void *p) {
    (void)id;
    (void)p;
    char buf[256];
    snprintf(buf, sizeof buf, "{\"insns\": %llu, \"mac_insns\": %llu, \"mac_lanes\": %llu}\n", (unsigned long long)insns,
             (unsigned long long)mac_insns, (unsigned long long)mac_lanes);
    qemu_plugin_outs(buf);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv) {
    (void)info;
    (void)argc;
    (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_tb);
    qemu_plugin_register_atexit_cb(id, on_exit_cb, NULL);
    return 0;
}
