// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test fixture for the btf module: one map per BTF shape the encoder and the
 * object inspector must handle. Compiled by the tests, never loaded. It does
 * not include kf.h, so its program must not reference kf_progs. */
#include <linux/bpf.h>
#include <linux/in.h>
#include <linux/in6.h>
#include <linux/types.h>
#include <bpf/bpf_helpers.h>

enum fx_mode {
	FX_MODE_OFF = 0,
	FX_MODE_FAST = 1,
	FX_MODE_SLOW = 2,
};

enum fx_small : __u8 {
	FX_SMALL_A = 1,
	FX_SMALL_B = 200,
};

enum fx_neg {
	FX_NEG_MINUS = -1,
	FX_NEG_ONE = 1,
};

struct fx_inner {
	__u16 port;
	__be16 nport;
};

union fx_u {
	__u32 word;
	__u8 bytes[4];
};

/* Padding after `tag` (3 bytes) and after `mode` (4 bytes) must stay zero. */
struct fx_value {
	__u8 tag;
	__u32 count;
	enum fx_mode mode;
	__u64 total;
	struct fx_inner inner;
	union fx_u u;
	__u32 flags : 3;
	__u32 level : 5;
	__s32 delta : 7;
	__u32 wide : 17;
	__u32 list[3];
	char label[16];
	__be16 port_be;
	__u8 mac[6];
	struct in6_addr ip6;
	struct in_addr ip4;
	__be32 ip4be;
	__u8 raw4[4];
	__u8 raw16[16];
	__s8 s8;
	__s16 s16;
	__s64 s64;
	_Bool on;
	enum fx_small small;
	enum fx_neg neg;
	__be64 be64;
	struct fx_inner pair[2];
	char *ptr;
	float ratio;
	double precise;
	struct {
		__u16 anon_a;
		__u16 anon_b;
	};
	union {
		__u32 alt_word;
		__u16 alt_half;
	};
};

struct fx_lpm_v4 {
	__u32 prefixlen;
	struct in_addr addr;
};

struct fx_lpm_bytes {
	__u32 prefixlen;
	__u8 data[16];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, struct fx_value);
} fx_values SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fx_lpm_v4);
	__type(value, __u32);
} fx_lpm_in_addr SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct fx_lpm_bytes);
	__type(value, __u32);
} fx_lpm_bytes SEC(".maps");

/* Sizes only, no types: encoders for it take hex bytes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__uint(key_size, 4);
	__uint(value_size, 12);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} fx_sized SEC(".maps");

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u64);
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, __u32);
	__array(values, struct inner_map);
} fx_outer SEC(".maps");

/* A legacy map definition, as libbpf before 1.0 read them. */
struct legacy_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

struct legacy_map_def fx_legacy SEC("maps") = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = 4,
	.value_size = 8,
	.max_entries = 3,
	.map_flags = 0,
};

const volatile __u32 sample_rate = 1;
const volatile enum fx_mode start_mode = FX_MODE_FAST;
__u64 packets_seen = 0;
__u32 scratch[4];
const volatile char greeting[8] SEC(".rodata.str") = "hi";

static __attribute__((noinline)) int fx_helper(__u32 key)
{
	struct fx_value *v = bpf_map_lookup_elem(&fx_values, &key);
	return v ? v->count : 0;
}

SEC("xdp")
int fx_xdp(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct fx_lpm_v4 k = { .prefixlen = 32 };
	__u32 *hit = bpf_map_lookup_elem(&fx_lpm_in_addr, &k);
	void *inner = bpf_map_lookup_elem(&fx_outer, &zero);
	__u64 *legacy = bpf_map_lookup_elem(&fx_legacy, &zero);
	packets_seen++;
	scratch[0] = sample_rate + start_mode + greeting[0];
	if (inner && legacy)
		return XDP_DROP;
	return hit ? XDP_PASS + fx_helper(*hit) : XDP_PASS;
}

/* A static map: clang relocates references to it against the .maps section
 * symbol, with the map's offset in the instruction. */
static struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} fx_static SEC(".maps");

SEC("tc")
int fx_tc(struct __sk_buff *skb)
{
	__u32 key = skb->mark;
	__u8 *v = bpf_map_lookup_elem(&fx_lpm_bytes, &key);
	__u64 *s = bpf_map_lookup_elem(&fx_static, &key);
	return v && s ? 0 : 1;
}

SEC("xdp.frags")
int fx_frags(struct xdp_md *ctx)
{
	return fx_helper(ctx->ingress_ifindex);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* More enumerators than an error message lists. */
enum fx_many {
	FX_M0, FX_M1, FX_M2, FX_M3, FX_M4, FX_M5,
	FX_M6, FX_M7, FX_M8, FX_M9, FX_M10, FX_M11,
};

const volatile enum fx_many many_mode = FX_M0;
