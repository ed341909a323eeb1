// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* Bundled KF "mark" (TC only): sets skb->mark and/or the DSCP of packets
 * matching its rules (source/destination prefixes, protocol, port ranges).
 * Config map `rules`: see lib/mark.h. Always TC_ACT_UNSPEC. */
#include "kf.h"
#include "lib/mark.h"

SEC("classifier")
int mark(struct __sk_buff *skb)
{
	struct kf_pkt pkt;
	if (kf_parse((void *)(long)skb->data, (void *)(long)skb->data_end, &pkt) == 0)
		mark_packet(skb, &pkt);
	return kf_next(skb, TC_ACT_UNSPEC);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
