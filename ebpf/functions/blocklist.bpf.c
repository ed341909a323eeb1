// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Bundled KF "blocklist" (XDP and TC): drops packets whose source is in deny_v4 /
 * deny_v6 unless it is also in allow_v4 / allow_v6. Maps: see lib/blocklist.h. */
#include "kf.h"
#include "lib/blocklist.h"

SEC("xdp")
int blocklist(struct xdp_md *ctx)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) == 0 &&
	    blocklist_denies(&pkt))
		return kf_next(ctx, XDP_DROP);
	return kf_next(ctx, XDP_PASS);
}

/* The same for TC hooks: drops with TC_ACT_SHOT, else TC_ACT_UNSPEC ("no
 * opinion": later TCX programs and filters still see the packet). */
SEC("classifier")
int blocklist_tc(struct __sk_buff *skb)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &pkt) == 0 &&
	    blocklist_denies(&pkt))
		return kf_next(skb, TC_ACT_SHOT);
	return kf_next(skb, TC_ACT_UNSPEC);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
