// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Bundled KF "blocklist-swap" (XDP and TC): the blocklist, with each list behind an
 * outer map so large lists swap atomically. Maps: see lib/blocklist_swap.h. */
#include "kf.h"
#include "lib/blocklist_swap.h"

SEC("xdp")
int blocklist_swap(struct xdp_md *ctx)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) == 0 &&
	    blocklist_swap_denies(&pkt))
		return kf_next(ctx, XDP_DROP);
	return kf_next(ctx, XDP_PASS);
}

/* The same for TC hooks (TC_ACT_SHOT or TC_ACT_UNSPEC). */
SEC("classifier")
int blocklist_swap_tc(struct __sk_buff *skb)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &pkt) == 0 &&
	    blocklist_swap_denies(&pkt))
		return kf_next(skb, TC_ACT_SHOT);
	return kf_next(skb, TC_ACT_UNSPEC);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
