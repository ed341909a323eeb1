// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Benchmark: KFs that do nothing but the kfd ABI, or only its tail call,
 * to measure a hop. */
#include "kf.h"

/* The tail call alone, without kf_next's verdict counter: what a hop costs
 * on this machine before kfd adds anything. */
static __always_inline int tail_only(void *ctx, int verdict)
{
	if (((kf_slot_idx + 1) & (KF_MAX_SLOTS - 1)) == 0)
		return verdict;
	bpf_tail_call(ctx, &kf_progs, kf_slot_idx + 1);
	return verdict;
}

/* NAME for XDP and NAME_tc for TC, each passing with BODY(ctx, verdict). */
#define BENCH_KF(name, body)                                                   \
	SEC("xdp")                                                             \
	int name(struct xdp_md *ctx)                                           \
	{                                                                      \
		return body(ctx, XDP_PASS);                                    \
	}                                                                      \
	SEC("classifier")                                                      \
	int name##_tc(struct __sk_buff *skb)                                   \
	{                                                                      \
		return body(skb, TC_ACT_UNSPEC);                               \
	}

BENCH_KF(kf_pass, kf_next)
BENCH_KF(kf_tail_only, tail_only)

char LICENSE[] SEC("license") = "Dual BSD/GPL";
