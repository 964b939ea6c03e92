"""Where the coordinator's CPU goes in one lone call: ``cluster.submit("add", 1, 2).result()``.

``python -m bench.lone_cpu [--calls N]`` starts one local worker (the direct path on), wraps the
coordinator's steps with ``time.thread_time()`` stamps (the calling thread's own CPU, so waiting
costs nothing) and prints the median CPU of each step of the calling thread per call. Each
stamp costs about 1 us (a clock_gettime system call); ``bench.trace`` gives the wall-clock hops.
A step with few samples ran on the wire's loop thread for some calls (a reply that came before
``result()`` was called).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

STEPS = [
    ("c0", "c1", "submit -> link.send (Call, future, encode args, choose, book: the lone lane)"),
    ("c1", "w0", "link.send -> the Pyro5 message (lone check, pick the slot's channel, the request dict)"),
    ("w0", "w1", "encode the Pyro5 message (invoke_small for a lone direct call, else invoke_pieces)"),
    ("w1", "p0", "start the call (lonecall.start, closures, sent_on; or wire.call's rest and _queue)"),
    ("p0", "p1", "write the request (lonecall.write or push: the send syscall)"),
    ("p1", "s1", "return from submit"),
    ("s1", "r0", "result() -> the read (lonecall.read or receive_here)"),
    ("r0", "d0", "the read: claim, poll, receive the reply (receive_here: and _end's lock)"),
    ("d0", "d1", "result_of: decode the Pyro5 reply"),
    ("d1", "b0", "-> batch_replied (put the slot's channel back)"),
    ("b0", "a0", "decode_reply (a lone success goes to the lone lane)"),
    ("a0", "a1", "_lone_ok (lock, retire, sizer, cost, settle the future)"),
    ("a1", "b1", "return from batch_replied"),
    ("b1", "c4", "return through the read and result()"),
]


def main() -> None:
    """Stamp, run, print the median CPU of each step."""
    ap = argparse.ArgumentParser(prog="python -m bench.lone_cpu", description=__doc__)
    ap.add_argument("--calls", type=int, default=3000)
    args = ap.parse_args()

    from pyrocluster.coordinator import channel, dispatch, links, wire
    from pyrocluster.coordinator.cluster import Cluster
    from pyrocluster.coordinator.wire import lonecall

    stamp = time.thread_time
    now: dict[str, float] = {}

    def around(cls: Any, attr: str, before: str | None, after: str | None) -> None:
        """Stamp ``before`` and ``after`` a method (the first time in a call)."""
        orig = getattr(cls, attr)

        def wrapped(*a: Any, **k: Any) -> Any:
            if before is not None:
                now.setdefault(before, stamp())
            out = orig(*a, **k)
            if after is not None:
                now.setdefault(after, stamp())
            return out

        setattr(cls, attr, wrapped)

    around(links.WorkerLink, "send", "c1", None)
    around(channel.Channel, "encode", "w0", "w1")
    around(wire.Wire, "push", "p0", "p1")
    around(lonecall, "write", "p0", "p1")
    around(wire.Wire, "receive_here", "r0", None)
    around(lonecall, "read", "r0", None)
    around(channel.Channel, "result_of", "d0", "d1")
    around(dispatch.Dispatcher, "batch_replied", "b0", "b1")
    around(dispatch.Dispatcher, "_lone_ok", "a0", "a1")
    cluster = Cluster.local(workers=1, direct=True)
    rows: list[dict[str, float]] = []
    try:
        for _ in range(300):
            cluster.submit("add", 1, 2).result()
        for _ in range(args.calls):
            now.clear()
            c0 = stamp()
            future = cluster.submit("add", 1, 2)
            now["s1"] = stamp()
            future.result()
            now.update(c0=c0, c4=stamp())
            rows.append(dict(now))
    finally:
        cluster.close()
    print(f"{args.calls} lone calls, one worker; median CPU of the calling thread per step (us):")
    for a, b, label in STEPS:
        got = [(r[b] - r[a]) * 1e6 for r in rows if a in r and b in r]
        if got:
            print(f"  {statistics.median(got):7.1f}  {label} ({len(got)} samples)")
    whole = statistics.median((r["c4"] - r["c0"]) * 1e6 for r in rows)
    print(f"  {whole:7.1f}  the whole call (median)")


if __name__ == "__main__":
    main()
