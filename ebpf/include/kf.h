/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * kf.h - the kfd kernel-function ABI (version 1). ebpf/ABI.md is the protocol.
 *
 * A KF includes this header and ends with `return kf_next(ctx, verdict);`.
 * kf_next counts the verdict for the running function, and when the verdict
 * is in the slot's proceed_on set, tail-calls the next slot of the chain.
 *
 * The kf_* maps below are the chain's shared maps. kfd pins them once per
 * chain and every program loaded into the chain reuses them, so their
 * definitions are part of the ABI: do not change them without bumping
 * KF_ABI_VERSION. Map names starting with "kf_" are reserved.
 */
#ifndef KF_H
#define KF_H

#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define KF_ABI_VERSION 1

/* Functions per chain. A power of two: kf_next masks with it. */
#define KF_MAX_SLOTS 32
/* Two revisions of the slots: the active one and the one being filled. */
#define KF_REVISIONS 2
/* Verdict counters per function. XDP verdict v counts in bit v; TC verdict v
 * (TC_ACT_UNSPEC is -1) counts in bit v + 1. proceed_on uses the same bits. */
#define KF_VERDICTS 16

/* The chain's control word. kfd flips active_rev after filling the other revision. */
struct kf_ctl {
	__u32 active_rev;
	__u32 abi_version;
};

/* Per-function verdict counters (per CPU). */
struct kf_stats {
	__u64 verdicts[KF_VERDICTS];
};

/* Slots: revision r occupies [r * KF_MAX_SLOTS, (r + 1) * KF_MAX_SLOTS). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, KF_MAX_SLOTS * KF_REVISIONS);
	__type(key, __u32);
	__type(value, __u32);
} kf_progs SEC(".maps");

/* Verdict counters, indexed by kf_fn_id. They survive swaps and reorders. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KF_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct kf_stats);
} kf_stats SEC(".maps");

/* The active revision, read by the root program once per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kf_ctl);
} kf_ctl SEC(".maps");

/* Set by kfd when it loads an instance of a KF into a chain (read-only
 * globals, so the verifier treats them as constants: the tail call below is
 * a direct jump, and the end-of-chain test is folded away). Reserved names. */
const volatile __u32 kf_slot_idx = 0;   /* this instance's index in kf_progs */
const volatile __u32 kf_fn_id = 0;      /* the function's row in kf_stats */
const volatile __u32 kf_proceed_on = 0; /* verdict bits that continue the chain */

/* Shared by both hooks: bias is 0 for XDP verdicts, 1 for TC (TC_ACT_UNSPEC is -1). */
static __always_inline int kf__next(void *ctx, int verdict, int bias)
{
	__u32 bit = (__u32)(verdict + bias) & (KF_VERDICTS - 1);
	__u32 fn_id = kf_fn_id;
	struct kf_stats *stats = bpf_map_lookup_elem(&kf_stats, &fn_id);
	if (stats)
		stats->verdicts[bit]++;
	if (!(kf_proceed_on & (1u << bit)))
		return verdict;
	/* The last slot of a revision never runs into the other revision. */
	if (((kf_slot_idx + 1) & (KF_MAX_SLOTS - 1)) == 0)
		return verdict;
	bpf_tail_call(ctx, &kf_progs, kf_slot_idx + 1);
	/* An empty slot ends the chain: the verdict stands. */
	return verdict;
}

/* return kf_next(ctx, verdict); - for both XDP (struct xdp_md *) and TC (struct __sk_buff *). */
#define kf_next(ctx, verdict)                                                  \
	_Generic((ctx),                                                        \
		struct xdp_md *: kf__next((ctx), (verdict), 0),                \
		struct __sk_buff *: kf__next((ctx), (verdict), 1))

/* The root's entry: start the packet at slot 0 of the active revision. Two
 * call sites with immediate keys (bpf_tail_call_static keeps clang from
 * merging them into one computed key), so both are direct jumps. */
static __always_inline void kf__start(void *ctx)
{
	__u32 zero = 0;
	struct kf_ctl *ctl = bpf_map_lookup_elem(&kf_ctl, &zero);
	if (!ctl)
		return;
	if (ctl->active_rev & 1)
		bpf_tail_call_static(ctx, &kf_progs, KF_MAX_SLOTS);
	else
		bpf_tail_call_static(ctx, &kf_progs, 0);
}

#endif /* KF_H */
