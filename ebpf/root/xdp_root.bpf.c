// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The XDP root: attached once per chain through a pinned bpf_link, it starts
 * each packet at slot 0 of the active revision. An empty chain passes. */
#include "kf.h"

SEC("xdp")
int kf_root_xdp(struct xdp_md *ctx)
{
	kf__start(ctx);
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
