/* A QEMU TCG plugin that counts the guest instructions a program executes (benchmarks/bench.py
 * --arm-icount; docs/performance.md, "ARM (aarch64) instruction counts under qemu").
 *
 * Every translated block gets an inline add of its instruction count to a per-vCPU (per guest
 * thread, in user mode) counter, executed each time the block starts; at exit the sum over all
 * threads is printed as one line
 *
 *     qexport-icount: insns=<N>
 *
 * to the file given as out=PATH (appended), else to stderr. Counting per block entry slightly
 * overcounts a block left part-way by a fault or a signal; a syscall ends its block, so ordinary
 * programs are counted exactly.
 *
 * With blocks=PATH every distinct block (start address, instruction count) also gets its own
 * execution counter, and at exit PATH receives one line "<start address hex> <insns> <executions>"
 * per executed block: benchmarks/arm_icount.py maps the addresses to libraries and symbols.
 *
 * Build (against the qemu-plugin.h of the qemu that loads it: the plugin API version must match):
 *   gcc -shared -fPIC -O2 -I<dir of qemu-plugin.h> $(pkg-config --cflags glib-2.0) \
 *       qemu_insn_count.c -o libqemu_insn_count.so
 * Run:  qemu-aarch64 -plugin ./libqemu_insn_count.so,out=count.txt ./program
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include <glib.h>
#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

static struct qemu_plugin_scoreboard *counts;
static qemu_plugin_u64 insns;
static char out_path[4096];
static char blocks_path[4096];

typedef struct {
  uint64_t vaddr;
  uint64_t n_insns;
  struct qemu_plugin_scoreboard *execs;
} Block;

static GHashTable *blocks; /* (vaddr, n_insns) -> Block */
static GMutex lock;

static guint block_hash(gconstpointer p) {
  const Block *b = p;
  return g_int64_hash(&b->vaddr) ^ (guint)b->n_insns;
}

static gboolean block_equal(gconstpointer a, gconstpointer b) {
  const Block *x = a, *y = b;
  return x->vaddr == y->vaddr && x->n_insns == y->n_insns;
}

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  (void)id;
  const size_t n = qemu_plugin_tb_n_insns(tb);
  qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, insns, n);
  if (blocks == NULL) return;
  Block key = {qemu_plugin_tb_vaddr(tb), n, NULL};
  g_mutex_lock(&lock);
  Block *b = g_hash_table_lookup(blocks, &key);
  if (b == NULL) {
    b = g_new0(Block, 1);
    *b = key;
    b->execs = qemu_plugin_scoreboard_new(sizeof(uint64_t));
    g_hash_table_insert(blocks, b, b);
  }
  g_mutex_unlock(&lock);
  qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64,
                                                    qemu_plugin_scoreboard_u64(b->execs), 1);
}

static void write_block(gpointer key, gpointer value, gpointer file) {
  (void)key;
  const Block *b = value;
  const uint64_t execs = qemu_plugin_u64_sum(qemu_plugin_scoreboard_u64(b->execs));
  if (execs > 0) fprintf(file, "%" PRIx64 " %" PRIu64 " %" PRIu64 "\n", b->vaddr, b->n_insns, execs);
}

static void on_plugin_exit(qemu_plugin_id_t id, void *data) {
  (void)id;
  (void)data;
  char line[64];
  snprintf(line, sizeof line, "qexport-icount: insns=%" PRIu64 "\n", qemu_plugin_u64_sum(insns));
  FILE *f = out_path[0] ? fopen(out_path, "a") : NULL;
  if (f != NULL) {
    fputs(line, f);
    fclose(f);
  } else {
    fputs(line, stderr); /* qemu_plugin_outs would need -d plugin */
  }
  if (blocks != NULL) {
    FILE *bf = fopen(blocks_path, "w");
    if (bf != NULL) {
      g_hash_table_foreach(blocks, write_block, bf);
      fclose(bf);
    } else {
      fprintf(stderr, "qemu_insn_count: cannot write %s\n", blocks_path);
    }
  }
  qemu_plugin_scoreboard_free(counts);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  (void)info;
  for (int i = 0; i < argc; ++i) {
    if (strncmp(argv[i], "out=", 4) == 0) {
      snprintf(out_path, sizeof out_path, "%s", argv[i] + 4);
    } else if (strncmp(argv[i], "blocks=", 7) == 0) {
      snprintf(blocks_path, sizeof blocks_path, "%s", argv[i] + 7);
    } else {
      fprintf(stderr, "qemu_insn_count: unknown argument '%s' (expected out=PATH or blocks=PATH)\n", argv[i]);
      return -1;
    }
  }
  counts = qemu_plugin_scoreboard_new(sizeof(uint64_t));
  insns = qemu_plugin_scoreboard_u64(counts);
  if (blocks_path[0]) blocks = g_hash_table_new(block_hash, block_equal);
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
  qemu_plugin_register_atexit_cb(id, on_plugin_exit, NULL);
  return 0;
}
