/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* LPM trie keys shared by the blocklists. */
#ifndef KF_LPM_H
#define KF_LPM_H

#include <linux/types.h>
#include <linux/in6.h>
#include <bpf/bpf_helpers.h>

/* LPM keys: prefix length, then the address in network byte order.
 * In config, a key is written as a CIDR ("192.0.2.0/24") or a bare address. */
struct lpm_v4_key {
	__u32 prefixlen;
	__be32 addr;
};

struct lpm_v6_key {
	__u32 prefixlen;
	struct in6_addr addr;
};

/* Whether `key` matches an entry whose value is non-zero (1 = present). */
static __always_inline int lpm_hit(void *map, void *key)
{
	__u8 *present = bpf_map_lookup_elem(map, key);
	return present && *present;
}

#endif
