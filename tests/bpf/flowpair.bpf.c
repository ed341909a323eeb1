// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test KF pair in the libbpf style: one program records IPv4 UDP flows as
 * they leave, the other as they arrive, both in `flows` (source address ->
 * counts), which the config shares between the two functions. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct flow {
	__u64 out;
	__u64 in;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 128);
	__type(key, __u32);
	__type(value, struct flow);
} flows SEC(".maps");

static __always_inline void record(struct __sk_buff *skb, int out)
{
	void *data = (void *)(long)skb->data, *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP)
		return;
	__u32 src = ip->saddr;
	struct flow *f = bpf_map_lookup_elem(&flows, &src);
	if (!f) {
		struct flow zero = {};
		bpf_map_update_elem(&flows, &src, &zero, BPF_NOEXIST);
		f = bpf_map_lookup_elem(&flows, &src);
		if (!f)
			return;
	}
	if (out)
		__sync_fetch_and_add(&f->out, 1);
	else
		__sync_fetch_and_add(&f->in, 1);
}

SEC("tcx/egress")
int flow_out(struct __sk_buff *skb)
{
	record(skb, 1);
	return TC_ACT_OK;
}

SEC("tcx/ingress")
int flow_in(struct __sk_buff *skb)
{
	record(skb, 0);
	return TC_ACT_OK;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
