/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* blocklist-swap - the blocklist with each list behind a one-slot outer map,
 * so kfd can replace a whole list with one atomic write (a map swap). */
#ifndef KF_BLOCKLIST_SWAP_H
#define KF_BLOCKLIST_SWAP_H

#include "kf_pkt.h"
#include "lpm.h"

/* The inner maps: the same LPM tries as the plain blocklist. In config, a
 * list's entries are the inner map's (CIDR keys, value 1 = present); kfd
 * builds a new inner map and swaps it in when a change is large or marked
 * `update: swap`, and writes into the current one otherwise.
 *
 * Their key types are spelled out as anonymous structs (same layout as
 * struct lpm_v4_key / lpm_v6_key): reached only through the outer map's
 * pointers, a named struct would be left as a forward declaration in BTF,
 * and the key could not be encoded (libbpf would refuse it too). */
#define KF_LPM_V4_KEY struct { __u32 prefixlen; __be32 addr; }
#define KF_LPM_V6_KEY struct { __u32 prefixlen; struct in6_addr addr; }
struct deny_v4_list {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, KF_LPM_V4_KEY);
	__type(value, __u8);
};

struct deny_v6_list {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 21);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, KF_LPM_V6_KEY);
	__type(value, __u8);
};

struct allow_v4_list {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, KF_LPM_V4_KEY);
	__type(value, __u8);
};

struct allow_v6_list {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 1 << 16);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, KF_LPM_V6_KEY);
	__type(value, __u8);
};

#define KF_OUTER(name, inner)                                                  \
	struct {                                                               \
		__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);                      \
		__uint(max_entries, 1);                                        \
		__type(key, __u32);                                            \
		__array(values, struct inner);                                 \
	} name SEC(".maps")

/* deny_v4, deny_v6, allow_v4, allow_v6: as in blocklist, one level down. */
KF_OUTER(deny_v4, deny_v4_list);
KF_OUTER(deny_v6, deny_v6_list);
KF_OUTER(allow_v4, allow_v4_list);
KF_OUTER(allow_v6, allow_v6_list);

/* A list whose slot is still empty matches nothing. */
static __always_inline int list_hit(void *outer, void *key)
{
	__u32 zero = 0;
	void *list = bpf_map_lookup_elem(outer, &zero);
	return list && lpm_hit(list, key);
}

/* Returns 1 when the packet must be dropped. */
static __always_inline int blocklist_swap_denies(const struct kf_pkt *pkt)
{
	if (pkt->family == ETH_P_IP) {
		struct lpm_v4_key key = { .prefixlen = 32, .addr = pkt->saddr4 };
		return !list_hit(&allow_v4, &key) && list_hit(&deny_v4, &key);
	}
	if (pkt->family == ETH_P_IPV6) {
		struct lpm_v6_key key = { .prefixlen = 128, .addr = pkt->saddr6 };
		return !list_hit(&allow_v6, &key) && list_hit(&deny_v6, &key);
	}
	return 0;
}

#endif
