// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Bundled KF "counter" (XDP): counts packets and bytes per L4 protocol in
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
