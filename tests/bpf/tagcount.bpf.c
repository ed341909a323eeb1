// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test KF (TC): counts packets by (skb->mark, DSCP) in its state map `tags`,
 * so a test can see what an earlier function (or the sender's egress) set. */
#include "kf.h"
#include "kf_pkt.h"

struct tag {
	__u32 mark;
	__u32 dscp;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct tag);
	__type(value, __u64);
} tags SEC(".maps");

SEC("classifier")
int tagcount(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct tag t = { .mark = skb->mark };
	if ((void *)(eth + 1) <= end && eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		if ((void *)(ip + 1) <= end)
			t.dscp = ip->tos >> 2;
	}
	__u64 one = 1, *n = bpf_map_lookup_elem(&tags, &t);
	if (n)
		__sync_fetch_and_add(n, 1);
	else
		bpf_map_update_elem(&tags, &t, &one, BPF_NOEXIST);
	return kf_next(skb, TC_ACT_UNSPEC);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
