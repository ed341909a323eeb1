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

/* One slot of a revision: what to do after the function in it returns. */
struct kf_slot {
	__u32 proceed_on; /* bit set: after this verdict, run the next slot */
	__u32 fn_id;      /* the function's row in kf_stats, stable while it is in the chain */
};

/* The chain's control word. kfd flips active_rev after filling the other revision. */
struct kf_ctl {
	__u32 active_rev;
	__u32 abi_version;
};

/* Where the packet is in the chain: the kf_progs index of the running slot.
 * Per-CPU: a packet runs to the end of its chain on one CPU, and tail calls
 * cannot be interleaved with another packet's on the same CPU. */
struct kf_cursor {
	__u32 idx;
	__u32 pad;
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

/* Slot settings, indexed like kf_progs. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, KF_MAX_SLOTS * KF_REVISIONS);
	__type(key, __u32);
	__type(value, struct kf_slot);
} kf_slots SEC(".maps");

/* Verdict counters, indexed by kf_slot.fn_id. They survive swaps and reorders. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, KF_MAX_SLOTS);
	__type(key, __u32);
	__type(value, struct kf_stats);
} kf_stats SEC(".maps");

/* Scratch: the cursor of the packet being processed on this CPU. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kf_cursor);
} kf_cursor SEC(".maps");

/* The active revision, read by the root program once per packet. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct kf_ctl);
} kf_ctl SEC(".maps");

/* Shared by both hooks: bias is 0 for XDP verdicts, 1 for TC (TC_ACT_UNSPEC is -1). */
static __always_inline int kf__next(void *ctx, int verdict, int bias)
{
	__u32 zero = 0;
	struct kf_cursor *cur = bpf_map_lookup_elem(&kf_cursor, &zero);
	if (!cur)
		return verdict;
	__u32 idx = cur->idx;
	struct kf_slot *slot = bpf_map_lookup_elem(&kf_slots, &idx);
	if (!slot)
		return verdict;
	__u32 bit = (__u32)(verdict + bias) & (KF_VERDICTS - 1);
	__u32 fn_id = slot->fn_id;
	struct kf_stats *stats = bpf_map_lookup_elem(&kf_stats, &fn_id);
	if (stats)
		stats->verdicts[bit]++;
	if (!(slot->proceed_on & (1u << bit)))
		return verdict;
	__u32 next = idx + 1;
	/* The last slot of a revision never runs into the other revision. */
	if ((next & (KF_MAX_SLOTS - 1)) == 0)
		return verdict;
	cur->idx = next;
	bpf_tail_call(ctx, &kf_progs, next);
	/* An empty slot ends the chain: the verdict stands. */
	return verdict;
}

/* return kf_next(ctx, verdict); - for both XDP (struct xdp_md *) and TC (struct __sk_buff *). */
#define kf_next(ctx, verdict)                                                  \
	_Generic((ctx),                                                        \
		struct xdp_md *: kf__next((ctx), (verdict), 0),                \
		struct __sk_buff *: kf__next((ctx), (verdict), 1))

/* The root's entry: start the packet at slot 0 of the active revision. */
static __always_inline void kf__start(void *ctx)
{
	__u32 zero = 0;
	struct kf_ctl *ctl = bpf_map_lookup_elem(&kf_ctl, &zero);
	struct kf_cursor *cur = bpf_map_lookup_elem(&kf_cursor, &zero);
	if (!ctl || !cur)
		return;
	__u32 idx = (ctl->active_rev & 1) * KF_MAX_SLOTS;
	cur->idx = idx;
	bpf_tail_call(ctx, &kf_progs, idx);
}

#endif /* KF_H */
