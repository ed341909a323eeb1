// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test KF in the style of a per-protocol quota from a KF collection: the
 * config sets each protocol's budget, and the program counts against it in
 * the same map value (so the program writes a config map). `rxq_pkts` has no
 * max_entries: its loader sizes it at run time, as libbpf callers do with
 * bpf_map__set_max_entries. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct quota {
	__u64 budget; /* packets allowed */
	__u64 used;   /* packets seen, written by the program */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u32); /* IP protocol */
	__type(value, struct quota);
} proto_quota SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
} rxq_pkts SEC(".maps");

SEC("xdp")
int quota(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__u32 q = ctx->rx_queue_index;
	__u64 *n = bpf_map_lookup_elem(&rxq_pkts, &q);

	if (n)
		__sync_fetch_and_add(n, 1);
	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	__u32 proto = ip->protocol;
	struct quota *qt = bpf_map_lookup_elem(&proto_quota, &proto);
	if (!qt)
		return XDP_PASS;
	if (qt->used >= qt->budget)
		return XDP_DROP;
	__sync_fetch_and_add(&qt->used, 1);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
