// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Benchmark baselines: a chain's work in one program, with no chaining.
 * Same maps and code as the KFs:
 * - monolithic_xdp / monolithic_tc: blocklist, ratelimit, counter (the
 *   example XDP chain) on XDP and on TC;
 * - monolithic_tc_mark: mark, counter (the example TC egress chain). */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include "../functions/lib/blocklist.h"
#include "../functions/lib/ratelimit.h"
#include "../functions/lib/counter.h"
#include "../functions/lib/mark.h"

SEC("xdp")
int monolithic_xdp(struct xdp_md *ctx)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) != 0)
		return XDP_PASS;
	if (blocklist_denies(&pkt))
		return XDP_DROP;
	if (ratelimit_exceeded(&pkt))
		return XDP_DROP;
	counter_count(&pkt);
	return XDP_PASS;
}

SEC("classifier")
int monolithic_tc(struct __sk_buff *skb)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &pkt) != 0)
		return TC_ACT_UNSPEC;
	if (blocklist_denies(&pkt))
		return TC_ACT_SHOT;
	if (ratelimit_exceeded(&pkt))
		return TC_ACT_SHOT;
	counter_count(&pkt);
	return TC_ACT_UNSPEC;
}

SEC("classifier")
int monolithic_tc_mark(struct __sk_buff *skb)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &pkt) != 0)
		return TC_ACT_UNSPEC;
	mark_packet(skb, &pkt);
	counter_count(&pkt);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
