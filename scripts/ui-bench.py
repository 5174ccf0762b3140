#!/usr/bin/env python3
"""How fast `netaware ui` opens and answers in a real browser.

Drives Debian's headless Chromium through chromedriver (W3C WebDriver,
Python's standard library only) against a running `netaware ui`, ROUNDS
times, and prints the median and worst of:

  open     navigation start to the first heatmap drawn (load, /api/view,
           drawing)
  redraw   colouring by another metric (the page redraws every cell)
  zoom     a click on the first off-diagonal cell to the zoomed heatmap
           (group view only: asks /api/pairs)

Usage: scripts/ui-bench.py URL [ROUNDS] [--screenshot FILE [--pair A,B] [--place K]]
(docs/benchmarks.md, section 12). With --screenshot it then shows the pair
A,B (or the first off-diagonal cell), places K nodes (default 4, with an
8 MiB all-reduce) and saves the window as a PNG (docs/ui.md's picture).
"""
import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ELEMENT = "element-6066-11e4-a52e-4f735466cecf"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Driver:
    def __init__(self, port):
        self.base = f"http://127.0.0.1:{port}"
        self.session = None

    def call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        prefix = "" if self.session is None else f"/session/{self.session}"
        req = urllib.request.Request(self.base + prefix + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.load(r)["value"]
        except urllib.error.HTTPError as e:
            sys.exit(f"{method} {path}: {e.code}: {e.read().decode(errors='replace')}")

    def js(self, script):
        return self.call("POST", "/execute/sync", {"script": script, "args": []})

    def until(self, script, within=60.0):
        deadline = time.monotonic() + within
        while not self.js(script):
            if time.monotonic() > deadline:
                sys.exit(f"timed out waiting for: {script}")
            time.sleep(0.02)


def screenshot(d, path, pair, k):
    """A pair shown, k nodes placed, the window saved as PNG."""
    d.call("POST", "/url", {"url": "about:blank"})
    d.call("POST", "/url", {"url": d.url})
    d.until("return document.querySelectorAll('#heatmap rect.cell').length > 0")
    if pair:
        a, b = pair.split(",")
        css = f"#heatmap rect.cell[data-src='{a}'][data-dst='{b}']"
    else:
        css = "#heatmap rect.cell:not(.self)"
    cell = d.call("POST", "/element", {"using": "css selector", "value": css})
    d.call("POST", f"/element/{cell[ELEMENT]}/click", {})
    d.until("return document.getElementById('pair-live')?.dataset.state === 'live'")
    d.js(f"document.getElementById('k').value = '{k}';"
         " document.getElementById('bytes').value = '8MiB';"
         " document.querySelector('#place button[type=submit]').click(); return true")
    d.until("return document.querySelector('#placement pre') !== null")
    time.sleep(1)
    png = base64.b64decode(d.call("GET", "/screenshot"))
    with open(path, "wb") as f:
        f.write(png)
    print(f"screenshot: {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("url")
    ap.add_argument("rounds", nargs="?", type=int, default=5)
    ap.add_argument("--screenshot")
    ap.add_argument("--pair")
    ap.add_argument("--place", type=int, default=4)
    args = ap.parse_args()
    url, rounds = args.url, args.rounds
    for tool in ("chromium", "chromedriver"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing: apt-get install chromium chromium-driver")
    port = free_port()
    driver = subprocess.Popen(["chromedriver", f"--port={port}"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    profile = tempfile.mkdtemp(prefix="ui-bench-")
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        d = Driver(port)
        d.url = url
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": shutil.which("chromium"),
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                     "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync",
                     "--window-size=1400,1000", f"--user-data-dir={profile}"]}}}}
        d.session = d.call("POST", "/session", caps)["sessionId"]
        runs = []
        for _ in range(rounds):
            d.call("POST", "/url", {"url": "about:blank"})
            d.call("POST", "/url", {"url": url})
            d.until("return document.querySelectorAll('#heatmap rect.cell').length > 0")
            # Navigation start to now, as the page's own clock measures it.
            opened = d.js("return performance.now()")
            kind = d.js("return document.getElementById('heatmap').dataset.kind")
            cells = d.js("return document.querySelectorAll('#heatmap rect.cell').length")
            nodes = d.js("return document.querySelectorAll('#heatmap text.row').length")
            redraw = d.js("const t = performance.now(); const m = document.getElementById('metric');"
                          " m.value = 'loss'; m.dispatchEvent(new Event('change'));"
                          " return performance.now() - t")
            zoom = None
            if kind == "group":
                cell = d.js("return [...document.querySelectorAll('#heatmap rect.cell')]"
                            ".find(r => r.dataset.src !== r.dataset.dst)")
                t = time.monotonic()
                d.call("POST", f"/element/{cell[ELEMENT]}/click", {})
                d.until("return document.getElementById('heatmap').dataset.kind === 'node'")
                zoom = (time.monotonic() - t) * 1000
            runs.append({"open_ms": opened, "redraw_ms": redraw, "zoom_ms": zoom,
                         "kind": kind, "cells": cells, "rows": nodes})
        if args.screenshot:
            screenshot(d, args.screenshot, args.pair, args.place)
        d.call("DELETE", "")
    finally:
        driver.kill()
        shutil.rmtree(profile, ignore_errors=True)

    print(json.dumps(runs))
    print(f"{rounds} rounds; view: {runs[0]['kind']} cells, {runs[0]['cells']} drawn, "
          f"{runs[0]['rows']} rows")
    for k in ("open_ms", "redraw_ms", "zoom_ms"):
        vs = [r[k] for r in runs if r[k] is not None]
        if vs:
            print(f"{k:10} median {statistics.median(vs):8.0f}  worst {max(vs):8.0f}")


if __name__ == "__main__":
    main()
