// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/* The TC root (ingress and egress): attached once per chain through a pinned
 * TCX link (or a clsact filter), it starts each packet at slot 0 of the
 * active revision. An empty chain returns TC_ACT_UNSPEC: no opinion, so the
 * next TCX program or filter (another tool's) decides. */
#include "kf.h"

SEC("classifier")
int kf_root_tc(struct __sk_buff *skb)
{
	kf__start(skb);
	return TC_ACT_UNSPEC;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
