// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Bundled KF "ratelimit" (XDP and TC): drops packets above rl_config's rate per
 * source. Config map rl_config, state map rl_buckets: see lib/ratelimit.h. */
#include "kf.h"
#include "lib/ratelimit.h"

SEC("xdp")
int ratelimit(struct xdp_md *ctx)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) == 0 &&
	    ratelimit_exceeded(&pkt))
		return kf_next(ctx, XDP_DROP);
	return kf_next(ctx, XDP_PASS);
}

/* The same for TC hooks (TC_ACT_SHOT or TC_ACT_UNSPEC). */
SEC("classifier")
int ratelimit_tc(struct __sk_buff *skb)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &pkt) == 0 &&
	    ratelimit_exceeded(&pkt))
		return kf_next(skb, TC_ACT_SHOT);
	return kf_next(skb, TC_ACT_UNSPEC);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
