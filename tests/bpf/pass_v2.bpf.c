// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Test object: passes everything through the kfd ABI, with a read-only
 * global so config can force program swaps (a globals change). */
#include "kf.h"

const volatile __u32 generation = 0;

SEC("xdp")
int pass_v2(struct xdp_md *ctx)
{
	/* Use the global so it is kept. */
	if (generation == 0xffffffff)
		return kf_next(ctx, XDP_ABORTED);
	return kf_next(ctx, XDP_PASS);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
