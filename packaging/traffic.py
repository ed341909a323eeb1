#!/usr/bin/python3
"""UDP traffic between two network namespaces, for packaging/systemd-test.

One process holds both ends: each socket is made in its namespace (setns
on this thread, then back), so no `ip netns exec` is needed and nothing
outlives the process.

  traffic.py probe NS_A NS_B DST PORT N SRC:pass|drop...
      Sends N datagrams from each SRC (an address of NS_A) to DST:PORT (in
      NS_B), in the order given. Waits, up to 5 s, until every datagram of
      the `pass` sources arrived, then prints "SRC RECEIVED" per source.
  traffic.py flow NS_A NS_B SRC DST PORT PPS DIR
      A paced, sequence-numbered flow until DIR/stop exists. Writes how
      many arrived so far to DIR/received, then, once stopped and the last
      datagrams are in (or 3 s passed), prints JSON: sent, received, lost
      (the first missing sequence numbers) and duplicates.
"""

import ctypes
import json
import os
import select
import socket
import struct
import sys
import time

CLONE_NEWNET = 0x40000000
libc = ctypes.CDLL(None, use_errno=True)


def setns(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(name, make):
    """Calls make() in /run/netns/NAME, then returns to our namespace."""
    home = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        setns(f"/run/netns/{name}")
        return make()
    finally:
        if libc.setns(home, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns back")
        os.close(home)


def receiver(ns, port):
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        # SO_RCVBUFFORCE (root may exceed rmem_max): a late reader loses nothing.
        s.setsockopt(socket.SOL_SOCKET, 33, 16 << 20)
        s.bind(("0.0.0.0", port))
        s.setblocking(False)
        return s

    return in_netns(ns, make)


def sender(ns, src):
    def make():
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((src, 0))
        return s

    return in_netns(ns, make)


def drain(rx, on_datagram):
    while True:
        try:
            data, (src, _) = rx.recvfrom(64)
        except BlockingIOError:
            return
        on_datagram(src, data)


def probe(ns_a, ns_b, dst, port, n, specs):
    rx = receiver(ns_b, port)
    sources = [spec.rsplit(":", 1) for spec in specs]
    got = {src: 0 for src, _ in sources}

    def count(src, _data):
        got[src] = got.get(src, 0) + 1

    for src, _ in sources:
        tx = sender(ns_a, src)
        for i in range(n):
            tx.sendto(struct.pack("!Q", i), (dst, port))
    deadline = time.monotonic() + 5
    want = [src for src, verdict in sources if verdict == "pass"]
    while time.monotonic() < deadline and any(got[s] < n for s in want):
        select.select([rx], [], [], 0.05)
        drain(rx, count)
    for src, _ in sources:
        print(src, got[src])


def flow(ns_a, ns_b, src, dst, port, pps, out):
    rx = receiver(ns_b, port)
    tx = sender(ns_a, src)
    tx.setblocking(False)
    seen = set()
    dups = 0

    def record(_src, data):
        nonlocal dups
        seq = struct.unpack("!Q", data[:8])[0]
        if seq in seen:
            dups += 1
        seen.add(seq)

    start = time.monotonic()
    sent = 0
    reported = 0
    while not os.path.exists(os.path.join(out, "stop")):
        # Keep pace, but after a stall catch up in bursts of at most 32:
        # a burst beyond the veth's ring would be the veth's loss, not kfd's.
        due = min(int((time.monotonic() - start) * pps), sent + 32)
        while sent < due:
            try:
                tx.sendto(struct.pack("!Q", sent), (dst, port))
            except BlockingIOError:
                break  # the queue is full: not sent, sent again later
            sent += 1
        drain(rx, record)
        if len(seen) - reported >= 100:
            reported = len(seen)
            with open(os.path.join(out, "received.tmp"), "w") as f:
                f.write(f"{reported}\n")
            os.rename(os.path.join(out, "received.tmp"), os.path.join(out, "received"))
        select.select([rx], [], [], 0.0005)
    deadline = time.monotonic() + 3
    while len(seen) < sent and time.monotonic() < deadline:
        select.select([rx], [], [], 0.05)
        drain(rx, record)
    lost = [i for i in range(sent) if i not in seen]
    print(json.dumps({"sent": sent, "received": len(seen), "lost": lost[:20], "duplicates": dups}))


def main(argv):
    if len(argv) >= 7 and argv[1] == "probe":
        probe(argv[2], argv[3], argv[4], int(argv[5]), int(argv[6]), argv[7:])
    elif len(argv) == 9 and argv[1] == "flow":
        flow(argv[2], argv[3], argv[4], argv[5], int(argv[6]), int(argv[7]), argv[8])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
