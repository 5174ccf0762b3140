#!/usr/bin/env python3
"""Build model/tests/fixtures/allreduce-lab.json from `netaware-lab bench`
reports (docs/bench/*.json): every distinct ring all-reduce node set with the
figures the aggregator had measured for it (what `Place`'s model sees) and
what the lab timed (median, mean, iterations and the retransmission-timeout
stalls counted in them).

    python3 scripts/cost-fixture.py docs/bench/allreduce-geo12-k4-tso-run1.json ... \
        > model/tests/fixtures/allreduce-lab.json

model/tests/cost_fixture.rs predicts every set from its figures and checks
the prediction against the measured mean; docs/placement.md ("Calibration")
says which runs the committed fixture holds.
"""

import json
import sys

# A set whose every link is this fast moves k flows of 1 Gbit/s at once
# through two shared cores (every rank, and the emulator forwarding all of
# them): the lab's host, not the emulated network, sets its pace
# (docs/benchmarks.md §8).
HOST_BOUND_MBPS = 1000.0
HOST_BOUND = (
    "every link of the ring is 1 Gbit/s: k flows at once plus every rank's copies and "
    "reductions on the lab's two shared cores, which a real cluster gives each node on its own"
)
# A retransmission timeout: Linux's minimum RTO plus an RTT, rounded to
# count whole stalls in an iteration's time.
STALL_MS = 205.0
# Iterations within this much of the fastest count as on time when
# finding the set's on-time duration.
ON_TIME_SPREAD_MS = 120.0


def stalls(iter_ms):
    """Whole timeouts in each iteration: its time past the on-time median,
    in units of one timeout."""
    fastest = min(iter_ms)
    on_time = sorted(t for t in iter_ms if t < fastest + ON_TIME_SPREAD_MS)
    base = on_time[len(on_time) // 2]
    return sum(max(0, round((t - base) / STALL_MS)) for t in iter_ms)


def sets_of(path):
    with open(path) as f:
        report = json.load(f)
    if report.get("algorithm", "ring") != "ring":
        sys.exit(f"{path}: not a ring all-reduce ({report['algorithm']}): the fixture is rings only")
    if report.get("shape"):
        sys.exit(f"{path}: a shaped job ({report['shape']}): the fixture is single rings only")
    # What the job needs of the lab machine's cores (its ranks over
    # loopback plus forwarding its bytes), which the bench measures since
    # 2026-12-04 and bounds every prediction below by.
    host = report.get("host")
    seen = set()
    for p in report["placements"]:
        m = p.get("measured") or {}
        if not m.get("complete") or m.get("bottleneck_mbps") is None:
            continue
        nodes = p["nodes"]
        if tuple(nodes) in seen:
            continue
        seen.add(tuple(nodes))
        it = p["iter_ms"]
        s = {
            "run": path.rsplit("/", 1)[-1],
            "nodes": nodes,
            "k": report["k"],
            "bytes": report["bytes"],
            "max_rtt_us": round(m["max_rtt_us"], 1),
            "bottleneck_mbps": round(m["bottleneck_mbps"], 1),
            "ring_loss": [round(x / 1e6, 5) for x in m["ring_loss_ppm"]],
            "iters": len(it),
            "p50_ms": round(p["iter_ms_p50"], 1),
            "mean_ms": round(sum(it) / len(it), 1),
            "stalls": stalls(it),
        }
        if host is not None and "cpu_ms" in host:
            s["lab_cpu_ms"] = round(host["cpu_ms"], 1)
        elif p["configured"]["bottleneck_mbps"] >= HOST_BOUND_MBPS:
            s["lab_host_bound"] = HOST_BOUND
        yield s


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: cost-fixture.py BENCH.json... > allreduce-lab.json")
    fixture = {
        "about": (
            "Ring all-reduces timed by netaware-lab bench (docs/benchmarks.md §8), one entry per "
            "distinct node set and run, with the figures the aggregator had measured for it; "
            "built by scripts/cost-fixture.py. ring_loss: each ring link's round-trip loss in ring "
            "order (the worse direction's probe loss as the bench read it: the smoothed figure "
            "until 2026-12-04, the long-horizon placement figure since). stalls: whole retransmission "
            "timeouts counted in the timed iterations. lab_cpu_ms: what the job needs of the lab "
            "machine's cores (every rank over loopback, plus forwarding its bytes), a lower bound "
            "on the prediction. lab_host_bound: in runs without lab_cpu_ms, why the lab, not the "
            "network, sets that set's pace."
        ),
        "sets": [s for path in sys.argv[1:] for s in sets_of(path)],
    }
    json.dump(fixture, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
