/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* kf_pkt.h - bounds-checked packet parsing shared by the bundled KFs (XDP and TC). */
#ifndef KF_PKT_H
#define KF_PKT_H

#include <linux/types.h>
#include <linux/if_ether.h>
#include <linux/in6.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

/* What the bundled KFs need from a packet's headers. */
struct kf_pkt {
	__u16 family;   /* ETH_P_IP or ETH_P_IPV6 in host order; 0 for anything else */
	__u8 l4proto;   /* IPPROTO_*; 0 when family is 0 */
	__u8 pad;
	__u16 sport;    /* TCP/UDP ports in host order; 0 for other protocols */
	__u16 dport;
	__u32 l3_off;   /* offset of the IP header from the start of the packet */
	__be32 saddr4;
	__be32 daddr4;
	struct in6_addr saddr6;
	struct in6_addr daddr6;
	__u32 len;      /* bytes from the Ethernet header to the end of the packet */
};

/* TCP and UDP both start with the two ports. */
struct kf_ports {
	__be16 source;
	__be16 dest;
};

static __always_inline void kf__ports(void *l4, void *end, struct kf_pkt *pkt)
{
	struct kf_ports *p = l4;
	if ((pkt->l4proto != IPPROTO_TCP && pkt->l4proto != IPPROTO_UDP) || (void *)(p + 1) > end)
		return;
	pkt->sport = bpf_ntohs(p->source);
	pkt->dport = bpf_ntohs(p->dest);
}

/* Parses Ethernet, then IPv4 or IPv6 (one 802.1Q tag is skipped), then the
 * TCP/UDP ports. Returns 0 on success, -1 when the headers are truncated.
 * Non-IP packets parse with family 0. */
static __always_inline int kf_parse(void *data, void *end, struct kf_pkt *pkt)
{
	struct ethhdr *eth = data;
	void *l3;
	__u16 proto;

	pkt->family = 0;
	pkt->l4proto = 0;
	pkt->sport = 0;
	pkt->dport = 0;
	pkt->len = (__u32)(end - data);
	if ((void *)(eth + 1) > end)
		return -1;
	proto = eth->h_proto;
	l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		__be16 *inner = (__be16 *)l3 + 1; /* skip the TCI */
		if ((void *)(inner + 1) > end)
			return -1;
		proto = *inner;
		l3 = inner + 1;
	}
	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = l3;
		if ((void *)(ip + 1) > end)
			return -1;
		pkt->family = ETH_P_IP;
		pkt->l4proto = ip->protocol;
		pkt->saddr4 = ip->saddr;
		pkt->daddr4 = ip->daddr;
		pkt->l3_off = (__u32)((void *)ip - data);
		if (ip->ihl >= 5)
			kf__ports((void *)ip + ip->ihl * 4, end, pkt);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = l3;
		if ((void *)(ip6 + 1) > end)
			return -1;
		pkt->family = ETH_P_IPV6;
		pkt->l4proto = ip6->nexthdr;
		__builtin_memcpy(&pkt->saddr6, &ip6->saddr, sizeof(pkt->saddr6));
		__builtin_memcpy(&pkt->daddr6, &ip6->daddr, sizeof(pkt->daddr6));
		pkt->l3_off = (__u32)((void *)ip6 - data);
		kf__ports(ip6 + 1, end, pkt); /* no extension headers are walked */
	}
	return 0;
}

#endif /* KF_PKT_H */
