// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test KF written the libbpf way, as a source-filter tool would ship it: no
 * kfd header, a map pinned by name, a legacy `maps` section map, an XDP
 * program in a section libbpf's own loader would not recognise and a TC one
 * in SEC("tc"). Both drop IPv4 packets whose source is in `blocked_src`. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32); /* source address as the packet holds it */
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} blocked_src SEC(".maps");

/* Pre-BTF map definition: key and value sizes only. */
struct legacy_map_def {
	unsigned int type;
	unsigned int key_size;
	unsigned int value_size;
	unsigned int max_entries;
	unsigned int map_flags;
};

/* [0] = dropped, [1] = passed. */
struct legacy_map_def SEC("maps") verdicts = {
	.type = BPF_MAP_TYPE_ARRAY,
	.key_size = sizeof(__u32),
	.value_size = sizeof(__u64),
	.max_entries = 2,
};

static __always_inline int blocked(void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 idx = 1;
	int drop = 0;

	if ((void *)(ip + 1) <= end && eth->h_proto == bpf_htons(ETH_P_IP) &&
	    bpf_map_lookup_elem(&blocked_src, &ip->saddr))
		drop = 1;
	idx = drop ? 0 : 1;
	__u64 *n = bpf_map_lookup_elem(&verdicts, &idx);
	if (n)
		__sync_fetch_and_add(n, 1);
	return drop;
}

SEC("xdp_src_filter")
int xdp_filter(struct xdp_md *ctx)
{
	return blocked((void *)(long)ctx->data, (void *)(long)ctx->data_end) ?
		       XDP_DROP : XDP_PASS;
}

SEC("tc")
int tc_filter(struct __sk_buff *skb)
{
	return blocked((void *)(long)skb->data, (void *)(long)skb->data_end) ?
		       TC_ACT_SHOT : TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
