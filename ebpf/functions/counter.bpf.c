// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Bundled KF "counter" (XDP and TC): counts packets and bytes per L4 protocol in
 * the state map counts (see lib/counter.h). Always passes. */
#include "kf.h"
#include "lib/counter.h"

SEC("xdp")
int counter(struct xdp_md *ctx)
{
	struct kf_pkt pkt;
	kf_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt);
	counter_count(&pkt);
	return kf_next(ctx, XDP_PASS);
}

/* The same for TC hooks; always TC_ACT_UNSPEC. */
SEC("classifier")
int counter_tc(struct __sk_buff *skb)
{
	struct kf_pkt pkt;
	kf_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &pkt);
	counter_count(&pkt);
	return kf_next(skb, TC_ACT_UNSPEC);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
