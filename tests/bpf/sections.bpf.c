// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test KF in the libbpf style with one program per section name that libbpf
 * users write (SEC("tc"), tcx/ingress, tcx/egress, action, an xdp_* name):
 * each counts the IPv4 UDP packets it sees in its own slot of `seen` and
 * lets them go on, so a test can tell which program ran on which hook. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
} seen SEC(".maps");

static __always_inline void count(void *data, void *end, __u32 slot)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP) ||
	    ip->protocol != IPPROTO_UDP)
		return;
	__u64 *n = bpf_map_lookup_elem(&seen, &slot);
	if (n)
		__sync_fetch_and_add(n, 1);
}

#define TC_PROG(sec, name, slot)                                               \
	SEC(sec) int name(struct __sk_buff *skb)                               \
	{                                                                      \
		count((void *)(long)skb->data, (void *)(long)skb->data_end,    \
		      slot);                                                   \
		return TC_ACT_OK;                                              \
	}

SEC("xdp_count")
int count_xdp(struct xdp_md *ctx)
{
	count((void *)(long)ctx->data, (void *)(long)ctx->data_end, 0);
	return XDP_PASS;
}

TC_PROG("tc", count_tc, 1)
TC_PROG("tcx/ingress", count_tcx_in, 2)
TC_PROG("tcx/egress", count_tcx_out, 3)
TC_PROG("action", count_action, 4)

char LICENSE[] SEC("license") = "Dual BSD/GPL";
