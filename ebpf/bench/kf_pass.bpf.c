// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Benchmark: KFs that do nothing but the kfd ABI, or only its tail call,
 * to measure a hop. */
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

/* The tail call alone, without kf_next's verdict counter: what a hop costs
 * on this machine before kfd adds anything. */
static __always_inline int tail_only(void *ctx, int verdict)
{
	if (((kf_slot_idx + 1) & (KF_MAX_SLOTS - 1)) == 0)
		return verdict;
	bpf_tail_call(ctx, &kf_progs, kf_slot_idx + 1);
	return verdict;
}

SEC("xdp")
int kf_tail_only(struct xdp_md *ctx)
{
	return tail_only(ctx, XDP_PASS);
}

SEC("classifier")
int kf_tail_only_tc(struct __sk_buff *skb)
{
	return tail_only(skb, TC_ACT_UNSPEC);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
