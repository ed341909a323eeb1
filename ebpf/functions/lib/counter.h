/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* counter - packets and bytes per L4 protocol. */
#ifndef KF_COUNTER_H
#define KF_COUNTER_H

#include "kf_pkt.h"

/* Key for packets that are not IPv4/IPv6 (IP protocol numbers stop at 255). */
#define COUNTER_NON_IP 256

struct counter_value {
	__u64 packets;
	__u64 bytes; /* from the Ethernet header on */
};

/* State: counts, key = IP protocol number (6 TCP, 17 UDP, 1 ICMP, 58 ICMPv6,
 * ...) or 256 for non-IP traffic. For IPv6 it is the fixed header's next
 * header: extension headers are not walked, so e.g. MLD reports (behind a
 * hop-by-hop header) count under 0. Per CPU; readers sum the CPUs. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_NON_IP + 1);
	__type(key, __u32);
	__type(value, struct counter_value);
} counts SEC(".maps");

static __always_inline void counter_count(const struct kf_pkt *pkt)
{
	__u32 key = pkt->family ? pkt->l4proto : COUNTER_NON_IP;
	struct counter_value *v = bpf_map_lookup_elem(&counts, &key);
	if (v) {
		v->packets++;
		v->bytes += pkt->len;
	}
}

#endif
