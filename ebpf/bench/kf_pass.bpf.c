// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Benchmark: a KF that does nothing but the kfd ABI, to measure a hop. */
#include "kf.h"

SEC("xdp")
int kf_pass(struct xdp_md *ctx)
{
	return kf_next(ctx, XDP_PASS);
}

SEC("classifier")
int kf_pass_tc(struct __sk_buff *skb)
{
	return kf_next(skb, TC_ACT_UNSPEC);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
