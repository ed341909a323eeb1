/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* blocklist - drop packets by source address, with an allow list that overrides. */
#ifndef KF_BLOCKLIST_H
#define KF_BLOCKLIST_H

#include "kf_pkt.h"

#include "lpm.h"

/* deny_v4, deny_v6: source prefixes to drop. Value 1 marks an entry present
 * (0 keeps the entry but disables it). */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} deny_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} deny_v6 SEC(".maps");

/* allow_v4, allow_v6: source prefixes never dropped, even when a deny entry matches. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v4_key);
	__type(value, __u8);
} allow_v4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct lpm_v6_key);
	__type(value, __u8);
} allow_v6 SEC(".maps");

/* Returns 1 when the packet must be dropped. */
static __always_inline int blocklist_denies(const struct kf_pkt *pkt)
{
	if (pkt->family == ETH_P_IP) {
		struct lpm_v4_key key = { .prefixlen = 32, .addr = pkt->saddr4 };
		return !lpm_hit(&allow_v4, &key) && lpm_hit(&deny_v4, &key);
	}
	if (pkt->family == ETH_P_IPV6) {
		struct lpm_v6_key key = { .prefixlen = 128, .addr = pkt->saddr6 };
		return !lpm_hit(&allow_v6, &key) && lpm_hit(&deny_v6, &key);
	}
	return 0;
}

#endif
