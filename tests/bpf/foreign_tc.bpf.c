// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test object: another tool's TC program (TCX or cls_bpf). It counts the IPv4
 * UDP packets it sees to port 9999 and lets everything through. */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "kf_pkt.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

SEC("classifier")
int foreign_tc(struct __sk_buff *skb)
{
	struct kf_pkt pkt;
	__u32 zero = 0;
	if (kf_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &pkt) == 0 &&
	    pkt.l4proto == 17 && pkt.dport == 9999) {
		__u64 *n = bpf_map_lookup_elem(&seen, &zero);
		if (n)
			__sync_fetch_and_add(n, 1);
	}
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
