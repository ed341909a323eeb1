// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Bundled KF "blocklist" (XDP): drops packets whose source is in deny_v4 /
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

char LICENSE[] SEC("license") = "Dual BSD/GPL";
