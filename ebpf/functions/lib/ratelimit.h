/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* ratelimit - a token bucket per source address. */
#ifndef KF_RATELIMIT_H
#define KF_RATELIMIT_H

#include "kf_pkt.h"

#define RL_NS_PER_SEC 1000000000ULL
/* Refill is computed over at most this much idle time, so the product with a
 * rate of up to 1e9 pps cannot overflow; any longer idle refills the bucket. */
#define RL_MAX_IDLE_NS (4ULL * RL_NS_PER_SEC)

/* rl_config key 0: packets per second per source, and the bucket size in
 * packets. rate_pps 0 turns the limit off. A burst below 1 counts as 1. */
struct rl_config {
	__u64 rate_pps;
	__u64 burst;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct rl_config);
} rl_config SEC(".maps");

/* State: one bucket per source. family is ETH_P_IP or ETH_P_IPV6; IPv4
 * addresses use the first 4 bytes of addr. */
struct rl_key {
	__u16 family;
	__u16 pad;
	__u8 addr[16];
};

/* tokens are in billionths of a packet, so refill needs no division. */
struct rl_bucket {
	__u64 tokens;
	__u64 last_ns;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct rl_key);
	__type(value, struct rl_bucket);
} rl_buckets SEC(".maps");

/* Returns 1 when the packet is over its source's rate. Buckets updated
 * concurrently from several CPUs may admit a few packets more than the rate:
 * the limit is approximate by design, like every lockless per-flow limiter. */
static __always_inline int ratelimit_exceeded(const struct kf_pkt *pkt)
{
	__u32 zero = 0;
	struct rl_config *cfg = bpf_map_lookup_elem(&rl_config, &zero);
	if (!cfg || cfg->rate_pps == 0 || pkt->family == 0)
		return 0;

	struct rl_key key = { .family = pkt->family };
	if (pkt->family == ETH_P_IP)
		__builtin_memcpy(key.addr, &pkt->saddr4, 4);
	else
		__builtin_memcpy(key.addr, &pkt->saddr6, 16);

	__u64 burst = cfg->burst ? cfg->burst : 1;
	__u64 cap = burst * RL_NS_PER_SEC;
	__u64 now = bpf_ktime_get_ns();
	struct rl_bucket *b = bpf_map_lookup_elem(&rl_buckets, &key);
	if (!b) {
		struct rl_bucket fresh = { .tokens = cap - RL_NS_PER_SEC, .last_ns = now };
		bpf_map_update_elem(&rl_buckets, &key, &fresh, BPF_ANY);
		return 0;
	}
	__u64 idle = now - b->last_ns;
	__u64 tokens = b->tokens;
	if (idle >= RL_MAX_IDLE_NS)
		tokens = cap;
	else
		tokens += idle * cfg->rate_pps;
	if (tokens > cap)
		tokens = cap;
	b->last_ns = now;
	if (tokens < RL_NS_PER_SEC) {
		b->tokens = tokens;
		return 1;
	}
	b->tokens = tokens - RL_NS_PER_SEC;
	return 0;
}

#endif
