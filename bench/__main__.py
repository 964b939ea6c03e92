"""``python -m bench``: run the workloads and print the table and the targets."""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
import traceback

from bench.common import Context, LoadMonitor, Sizes
from bench.report import Report, machine_info

WORKLOADS = {
    "w1": "bench.w1_tiny",
    "latency": "bench.w1_latency",
    "memory": "bench.memory",
    "flow": "bench.workflows",
    "w2": "bench.w2_cpu",
    "w3": "bench.w3_crawl",
    "w3inc": "bench.w3_incremental",
    "scale": "bench.scale",
    "sim": "bench.sim",
    "startup": "bench.startup",
}
"""Run in this order: the first four share the default two-worker cluster."""
USES_DEFAULT_CLUSTER = {"w1", "latency", "memory", "flow"}


def parse(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="about a minute: fewer reps, smaller sizes")
    ap.add_argument("--only", default="", help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    ap.add_argument("--reps", type=int, default=0, help="repetitions per measurement (default 5, quick 3)")
    ap.add_argument(
        "--workers",
        default="",
        metavar="N,N,...",
        help="worker counts of the scale curve (default 16,32,64,128; quick 8,16); 2 is always added",
    )
    ap.add_argument("--json", metavar="OUT", help="also write every sample, median and target as JSON")
    ap.add_argument(
        "--markdown",
        metavar="PATH",
        help="also write the generated block of BENCHMARKS.md (replaced between its markers)",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run, print, save; exit 1 when a workload broke (a missed target is not an error)."""
    args = parse(sys.argv[1:] if argv is None else argv)
    chosen = [w.strip() for w in args.only.split(",") if w.strip()] or list(WORKLOADS)
    unknown = [w for w in chosen if w not in WORKLOADS]
    if unknown:
        print(
            f"error: unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}",
            file=sys.stderr,
        )
        return 2
    sizes = Sizes.quick() if args.quick else Sizes.full()
    if args.reps:
        sizes.reps = args.reps
    if args.workers:
        try:
            sizes.scale_workers = sorted({int(w) for w in args.workers.split(",") if w.strip()})
        except ValueError:
            print(f"error: --workers {args.workers!r}: expected comma-separated counts", file=sys.stderr)
            return 2
        if not sizes.scale_workers or min(sizes.scale_workers) < 1:
            print(f"error: --workers {args.workers!r}: counts must be 1 or more", file=sys.stderr)
            return 2
    command = "python -m bench " + " ".join(shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    report = Report(command=command.strip(), quick=args.quick, machine=machine_info())
    ctx = Context(sizes, report)
    started = time.monotonic()
    broken = []
    monitor = LoadMonitor()
    mark = monitor.mark()
    time.sleep(2.0)
    foreign, _ = monitor.since(mark)
    report.machine["other load at start"] = f"{foreign:.0%} of the CPUs used by other processes (2 s sample)"
    try:
        for name in [w for w in WORKLOADS if w in chosen]:
            if name not in USES_DEFAULT_CLUSTER:
                ctx.close_default_cluster()  # its idle processes stay out of the way
            mark = monitor.mark()
            try:
                importlib.import_module(WORKLOADS[name]).run(ctx)
            except Exception as exc:  # report the others anyway
                traceback.print_exc()
                broken.append(name)
                report.note(name, f"BROKEN: {type(exc).__name__}: {exc}")
            foreign, ours = monitor.since(mark)
            report.load[name] = (foreign, ours)
            ctx.log(f"{name}: other processes used {foreign:.0%} of the CPUs meanwhile (we used {ours:.0%})")
    except KeyboardInterrupt:
        print("interrupted: printing what was measured", file=sys.stderr)
        broken.append("interrupted")
    finally:
        ctx.close()
        monitor.stop()
    report.wall_s = time.monotonic() - started
    print(report.text())
    if args.json:
        report.write_json(args.json)
    if args.markdown:
        report.write_markdown(args.markdown)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
