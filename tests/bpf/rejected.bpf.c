// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test object: compiles, but the verifier refuses it (a packet read with
 * no bounds check). Used to prove a rejected load leaves the chain alone. */
#include "kf.h"

SEC("xdp")
int rejected(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	if (data[100] == 1)
		return kf_next(ctx, XDP_DROP);
	return kf_next(ctx, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
