#!/usr/bin/env python3
"""What agent authentication and TLS cost, from a lab run's logs.

Usage: scripts/bench-auth.py LOG_DIR   (the --log-dir of `netaware-lab run`)

Prints, per agent, the time from its start ("agent started") to its first
plan ("connected to the aggregator"), and the aggregator's TokenReviews per
agent ("agent token reviewed" lines) over the run. Log lines are the
binaries' text format: an RFC 3339 timestamp first.
"""
import datetime
import os
import re
import statistics
import sys

STAMP = re.compile(r"^\S*?(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z)")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def when(line):
    m = STAMP.match(ANSI.sub("", line))
    if not m:
        return None
    return datetime.datetime.fromisoformat(m.group(1).replace("Z", "+00:00"))


def first(path, text):
    with open(path, errors="replace") as f:
        for line in f:
            if text in line:
                return when(line)
    return None


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    logs = sys.argv[1]
    agg = os.path.join(logs, "aggregator.log")
    if not os.path.isfile(agg):
        sys.exit(f"{agg} is missing: give the lab's --log-dir")
    with open(agg, errors="replace") as f:
        text = ANSI.sub("", f.read())
    reviewed = re.findall(r"agent token reviewed.*?node=(\S+)", text) or re.findall(
        r"node=(\S+).*agent token reviewed", text
    )
    waits = {}
    for name in sorted(os.listdir(logs)):
        if not name.endswith(".log") or name in ("aggregator.log", "apiserver.log"):
            continue
        path = os.path.join(logs, name)
        start, plan = first(path, "agent started"), first(path, "connected to the aggregator")
        if start and plan:
            waits[name[:-4]] = (plan - start).total_seconds()
    if not waits:
        sys.exit(f"no agent log in {logs} has both 'agent started' and a first plan")
    w = sorted(waits.values())
    print(f"agents: {len(w)}")
    print(f"start to first plan: median {statistics.median(w) * 1000:.0f} ms, max {w[-1] * 1000:.0f} ms")
    per = {n: reviewed.count(n) for n in waits}
    print(f"token reviews: {len(reviewed)} in all, per agent max {max(per.values())}, min {min(per.values())}")


if __name__ == "__main__":
    main()
