/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* mark - tag packets: set skb->mark and/or the DSCP from match rules. */
#ifndef KF_MARK_H
#define KF_MARK_H

#include "kf_pkt.h"

#define MARK_RULES 32

/* What a rule sets (mark_rule.set). A rule that sets nothing is unused. */
enum mark_set {
	MARK_SET_MARK = 1,
	MARK_SET_DSCP = 2,
	MARK_SET_BOTH = 3,
};

/* A prefix to match; prefixlen 0 matches any address (of any family).
 * In config: CIDR text ("192.0.2.0/24"). */
struct mark_prefix4 {
	__u32 prefixlen;
	__be32 addr;
};

struct mark_prefix6 {
	__u32 prefixlen;
	struct in6_addr addr;
};

/* One rule. Every field left at zero matches anything; a v4 prefix only
 * matches IPv4 packets and a v6 prefix only IPv6 ones. Port ranges apply to
 * TCP and UDP (dport_max 0: any port). */
struct mark_rule {
	enum mark_set set;   /* MARK_SET_MARK, MARK_SET_DSCP or MARK_SET_BOTH */
	__u32 mark;          /* skb->mark to set */
	__u8 dscp;           /* DSCP to set, 0..63 (the ECN bits are kept) */
	__u8 proto;          /* IP protocol to match (6 TCP, 17 UDP, ...); 0: any */
	__u16 sport_min;
	__u16 sport_max;
	__u16 dport_min;
	__u16 dport_max;
	__u16 pad;
	struct mark_prefix4 src4;
	struct mark_prefix4 dst4;
	struct mark_prefix6 src6;
	struct mark_prefix6 dst6;
};

/* rules: config, an array of MARK_RULES rules. Of the rules that match, the
 * most specific is applied: the longest prefixes (source + destination
 * prefix lengths), then the most of protocol, source ports and destination
 * ports constrained, then the lowest index. So "10.0.0.0/8 gets AF11 but
 * 10.1.0.0/16 gets EF" and "10.1.0.0/16 gets AF11 but its UDP 5060 gets EF"
 * hold whatever the order. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MARK_RULES);
	__type(key, __u32);
	__type(value, struct mark_rule);
} rules SEC(".maps");

static __always_inline int prefix4_match(const struct mark_prefix4 *p, __be32 addr)
{
	if (p->prefixlen == 0)
		return 1;
	__u32 mask = p->prefixlen >= 32 ? 0xffffffff : ~(0xffffffffu >> p->prefixlen);
	return (bpf_ntohl(addr) & mask) == (bpf_ntohl(p->addr) & mask);
}

static __always_inline int prefix6_match(const struct mark_prefix6 *p, const struct in6_addr *addr)
{
	if (p->prefixlen == 0)
		return 1;
	__u32 len = p->prefixlen > 128 ? 128 : p->prefixlen;
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 bits = len > 32u * i ? len - 32u * i : 0;
		if (bits == 0)
			break;
		__u32 mask = bits >= 32 ? 0xffffffff : ~(0xffffffffu >> bits);
		if ((bpf_ntohl(addr->in6_u.u6_addr32[i]) & mask) != (bpf_ntohl(p->addr.in6_u.u6_addr32[i]) & mask))
			return 0;
	}
	return 1;
}

static __always_inline int port_in(__u16 port, __u16 min, __u16 max)
{
	return max == 0 || (port >= min && port <= max);
}

/* -1 if the rule does not match, else its specificity: the summed length
 * of its prefixes, times 4, plus one for each of protocol, source ports and
 * destination ports it constrains. */
static __always_inline int mark_matches(const struct mark_rule *r, const struct kf_pkt *pkt)
{
	if (r->proto && r->proto != pkt->l4proto)
		return -1;
	if (!port_in(pkt->sport, r->sport_min, r->sport_max) || !port_in(pkt->dport, r->dport_min, r->dport_max))
		return -1;
	int len = 0;
	if (r->src4.prefixlen || r->dst4.prefixlen) {
		if (pkt->family != ETH_P_IP || !prefix4_match(&r->src4, pkt->saddr4) ||
		    !prefix4_match(&r->dst4, pkt->daddr4))
			return -1;
		len += (r->src4.prefixlen & 63) + (r->dst4.prefixlen & 63);
	}
	if (r->src6.prefixlen || r->dst6.prefixlen) {
		if (pkt->family != ETH_P_IPV6 || !prefix6_match(&r->src6, &pkt->saddr6) ||
		    !prefix6_match(&r->dst6, &pkt->daddr6))
			return -1;
				len += (r->src6.prefixlen & 255) + (r->dst6.prefixlen & 255);
	}
	return len * 4 + (r->proto != 0) + (r->sport_max != 0) + (r->dport_max != 0);
}

/* Rewrites the DSCP (keeping ECN), fixing the IPv4 header checksum. */
static __always_inline void set_dscp(struct __sk_buff *skb, const struct kf_pkt *pkt, __u8 dscp)
{
	__u8 head[2];
	if (bpf_skb_load_bytes(skb, pkt->l3_off, head, 2))
		return;
	if (pkt->family == ETH_P_IP) {
		__u8 tos = (__u8)(dscp << 2) | (head[1] & 3);
		__u16 old = *(__u16 *)head;
		head[1] = tos;
		__u16 new = *(__u16 *)head;
		bpf_l3_csum_replace(skb, pkt->l3_off + offsetof(struct iphdr, check), old, new, 2);
		bpf_skb_store_bytes(skb, pkt->l3_off + 1, &tos, 1, 0);
	} else if (pkt->family == ETH_P_IPV6) {
		/* version(4) | traffic class(8) | flow label(20); DSCP is the top 6 bits of the class. */
		__u8 ecn = (head[1] >> 4) & 3;
		__u8 tc = (__u8)(dscp << 2) | ecn;
		head[0] = (head[0] & 0xf0) | (tc >> 4);
		head[1] = (__u8)((tc & 0x0f) << 4) | (head[1] & 0x0f);
		bpf_skb_store_bytes(skb, pkt->l3_off, head, 2, 0);
	}
}

/* The scan over the rules runs under bpf_loop: its body is verified once,
 * where an unrolled 32-rule scan that tracks the best match so far makes
 * the verifier explore every combination and give up. */
struct mark_scan {
	struct kf_pkt pkt;
	__u32 best;    /* index of the best rule so far, MARK_RULES if none */
	int best_len;
};

static long mark_scan_rule(__u32 i, void *data)
{
	struct mark_scan *s = data;
	__u32 key = i;
	const struct mark_rule *r = bpf_map_lookup_elem(&rules, &key);
	if (!r || !r->set)
		return 0;
	int len = mark_matches(r, &s->pkt);
	if (len > s->best_len) {
		s->best = i;
		s->best_len = len;
	}
	return 0;
}

static __always_inline void mark_packet(struct __sk_buff *skb, const struct kf_pkt *pkt)
{
	struct mark_scan scan = { .pkt = *pkt, .best = MARK_RULES, .best_len = -1 };
	bpf_loop(MARK_RULES, mark_scan_rule, &scan, 0);
	__u32 key = scan.best;
	const struct mark_rule *best = bpf_map_lookup_elem(&rules, &key);
	if (!best)
		return;
	if (best->set & MARK_SET_MARK)
		skb->mark = best->mark;
	if ((best->set & MARK_SET_DSCP) && pkt->family)
		set_dscp(skb, pkt, best->dscp & 63);
}

#endif
