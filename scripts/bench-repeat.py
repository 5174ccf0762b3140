#!/usr/bin/env python3
"""Does `netaware-lab bench` repeat? Two reports of the same command, side
by side, placement by placement.

    python3 scripts/bench-repeat.py docs/bench/allreduce-geo12-k4-cores-run1.json \\
        docs/bench/allreduce-geo12-k4-cores-run2.json

For each placement: its p50 ÷ netaware's and its mean ÷ netaware's in both
runs and how far the second is from the first, and the prediction the
bench compares ÷ the measured mean in both. A placement whose nodes differ
between the runs is marked: it is not the same set twice. Then each run's
order figures (tied Spearman; pairs predicted apart that ran in that
order), and a count of the placements whose p50 ratio to netaware repeats
within ±10 % (issue 15's goal; docs/benchmarks.md §8), naming the others.
Exits 2 when the reports are not of the same command (topology, k, bytes,
algorithm, shape).
"""
import json
import sys

LIMIT = 0.10
SAME = ("topology", "k", "bytes", "algorithm", "shape")


def load(path):
    with open(path) as f:
        return json.load(f)


def cell(x, digits=2):
    return "–" if x is None else f"{x:.{digits}f}"


def change(a, b):
    if a is None or b is None or a == 0:
        return None
    return b / a - 1.0


def lab_over_mean(p):
    predicted = p.get("predicted_with_host_ms") or p.get("predicted_ms")
    mean = p.get("iter_ms_mean")
    if predicted is None or not mean:
        return None
    return predicted / mean


def main(argv):
    if len(argv) != 3:
        sys.exit(__doc__)
    first, second = load(argv[1]), load(argv[2])
    for key in SAME:
        if first.get(key) != second.get(key):
            print(
                f"{argv[1]} and {argv[2]} differ in {key} "
                f"({first.get(key)!r} against {second.get(key)!r}): not two runs of one command",
                file=sys.stderr,
            )
            return 2
    later = {p["name"]: p for p in second["placements"]}
    print(
        "| placement | same nodes | p50 ÷ netaware 1 | 2 | change "
        "| mean ÷ netaware 1 | 2 | change | lab ÷ mean 1 | 2 |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    held, missed = 0, []
    for a in first["placements"]:
        b = later.get(a["name"])
        if b is None:
            print(f"| {a['name']} | only in run 1 | | | | | | | | |")
            continue
        same = sorted(a.get("nodes") or []) == sorted(b.get("nodes") or [])
        p50 = change(a.get("ratio_to_netaware"), b.get("ratio_to_netaware"))
        mean = change(a.get("mean_ratio_to_netaware"), b.get("mean_ratio_to_netaware"))
        print(
            f"| {a['name']} | {'yes' if same else 'no'} "
            f"| {cell(a.get('ratio_to_netaware'))} | {cell(b.get('ratio_to_netaware'))} "
            f"| {'–' if p50 is None else f'{p50:+.0%}'} "
            f"| {cell(a.get('mean_ratio_to_netaware'))} | {cell(b.get('mean_ratio_to_netaware'))} "
            f"| {'–' if mean is None else f'{mean:+.0%}'} "
            f"| {cell(lab_over_mean(a))} | {cell(lab_over_mean(b))} |"
        )
        if a is first["placements"][0]:
            # The reference (netaware, or netaware-shaped): its ratio is 1.
            continue
        if p50 is not None and abs(p50) <= LIMIT:
            held += 1
        else:
            missed.append(f"{a['name']} ({'–' if p50 is None else f'{p50:+.0%}'})")
    total = held + len(missed)
    print()
    for run, r in ((1, first), (2, second)):
        o = r.get("ordered_pairs")
        pairs = (
            f"{o['by_mean']} of {o['apart']} pairs predicted apart ran in that order by the mean, "
            f"{o['by_median']} by the median"
            if o
            else "no ordered_pairs in this report (older bench)"
        )
        print(
            f"run {run}: Spearman tied {cell(r.get('spearman_tied_predicted_mean'))} by the mean, "
            f"{cell(r.get('spearman_tied_predicted_measured'))} by the median; {pairs}"
        )
    reference = first["placements"][0]["name"]
    print(f"p50 ÷ {reference}'s within ±{LIMIT:.0%} in both runs: {held} of {total}")
    if missed:
        print("not: " + ", ".join(missed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
