// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test object for the bad-input corpus (tests/corpus/): maps whose BTF types
 * the bundled functions do not have (a MAC key, arrays, enums, big-endian
 * ports, char strings), so every kind of encoding error can be provoked.
 * It passes everything; the corpus never gets it loaded. */
#include "kf.h"

enum corpus_mode {
	CORPUS_OFF = 0,
	CORPUS_LOG = 1,
	CORPUS_DROP = 2,
};

struct corpus_rule {
	enum corpus_mode mode;
	__be16 port;
	__u16 weight;
	__u32 ports[4];
	char label[8];
	__s8 bias;
};

/* Per-MAC rules: the key is a __u8[6], written as a MAC address. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4);
	__type(key, __u8[6]);
	__type(value, struct corpus_rule);
} by_mac SEC(".maps");

/* A 64-bit counter limit per small index. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} limits SEC(".maps");

const volatile __u8 level = 0;

SEC("xdp")
int corpus_types(struct xdp_md *ctx)
{
	__u8 mac[6] = {};
	__u32 zero = 0;
	struct corpus_rule *r = bpf_map_lookup_elem(&by_mac, mac);
	__u64 *l = bpf_map_lookup_elem(&limits, &zero);
	if (r && r->mode == CORPUS_DROP && level > 0)
		return kf_next(ctx, XDP_DROP);
	if (l && *l == 1)
		return kf_next(ctx, XDP_DROP);
	return kf_next(ctx, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
