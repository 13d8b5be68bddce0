"""Turns bench/compare.sh's measurements into the markdown of docs/benchmarks.md.

usage: report.py RESULTS.tsv CRITERION.txt MACHINE VERSIONS SECONDS BIG_MB
RESULTS.tsv holds `kind, setup, key, value` lines; CRITERION.txt is criterion's text output
(absent when skipped).
"""

import datetime
import os
import re
import sys

CEILING = "registry:2, no auth (ceiling)"
NGINX = "nginx auth_basic recipe"
GATEWAY = ("Portcullis gateway, Basic", "Portcullis gateway, Bearer")
TOKEN_SERVER = "Portcullis token server + registry:2, Bearer"
RELAY = "bare TCP relay (socat), no auth"


def load(path):
    results, order = {}, []
    with open(path) as f:
        for line in f:
            kind, setup, key, value = line.rstrip("\n").split("\t")
            results[(kind, setup, key)] = float(value) if value else 0.0
            if kind == "manifests" and setup not in order:
                order.append(setup)
    return results, order


def criterion(path):
    """(benchmark name, median µs) from criterion's text output."""
    if not os.path.exists(path):
        return []
    units = {"ps": 1e-6, "ns": 1e-3, "µs": 1.0, "us": 1.0, "ms": 1e3, "s": 1e6}
    rows, previous = [], None
    for line in open(path):
        m = re.search(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if m:
            name = line[: line.index("time:")].strip() or previous
            rows.append((name, float(m.group(1)) * units[m.group(2)]))
        elif line.strip() and not line.startswith(("Benchmarking", "Found", "  ")):
            previous = line.strip()
    return rows


def main():
    results_path, criterion_path, machine, versions, seconds, big_mb = sys.argv[1:7]
    r, setups = load(results_path)
    get = lambda *key: r.get(key, 0.0)
    ratio = lambda value, base: value / base if base else 0.0
    connections = sorted(
        {int(k[2].split("@")[1]) for k in r if k[0] == "manifests" and k[2].startswith("rate@")}
    )
    out = [
        f"### Side by side, {datetime.date.today()} ({machine})",
        "",
        f"`bench/compare.sh`: everything on loopback on these cores at once (servers, wrk, curl); "
        f"users bcrypt cost 10; {seconds} s of wrk per cell; {versions}.",
        "",
        "**Manifest GETs** (a tagged OCI manifest): requests/s (ratio to the ceiling), p50 / p99 ms.",
        "",
        "| setup | " + " | ".join(f"{c} connection{'s' if c > 1 else ''}" for c in connections) + " |",
        "|---" * (len(connections) + 1) + "|",
    ]
    for setup in setups:
        cells = []
        for c in connections:
            rate = get("manifests", setup, f"rate@{c}")
            errors = get("manifests", setup, f"errors@{c}")
            if not rate:
                cells.append(f"no answer within {seconds} s")
                continue
            cell = (
                f"{rate:.0f} ({ratio(rate, get('manifests', CEILING, f'rate@{c}')):.2f}x), "
                f"{get('manifests', setup, f'p50@{c}'):.1f} / {get('manifests', setup, f'p99@{c}'):.1f}"
            )
            if errors:
                cell += f", {errors:.0f} errors"
            cells.append(cell)
        out.append(f"| {setup} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"**{big_mb} MiB blob**, median of 5 curl pulls and 3 pushes, the setups taking turns (pushes: POST, then one monolithic PUT), "
        f"and the servers' **peak resident memory** during the {connections[-1]}-connection run "
        "(VmHWM, reset before it; the token-server row adds the registry and Portcullis, nginx "
        "master and worker).",
        "",
        "| setup | pull MB/s | ratio | push MB/s | ratio | peak RSS MiB |",
        "|---|---|---|---|---|---|",
    ]
    for setup in setups:
        pull, push = get("blobs", setup, "pull") / 1e6, get("blobs", setup, "push") / 1e6
        peak = r.get(("memory", setup, "peak_kib"))
        peak = f"{peak / 1024:.0f}" if peak is not None else "-"
        out.append(
            f"| {setup} | {pull:.0f} | {ratio(pull, get('blobs', CEILING, 'pull') / 1e6):.2f}x "
            f"| {push:.0f} | {ratio(push, get('blobs', CEILING, 'push') / 1e6):.2f}x | {peak} |"
        )
    cores = os.cpu_count()
    out += [
        "",
        f"**Token issuance**, warm credential cache (`GET /token` with Basic, one pull scope, "
        f"wrk 16 connections), against `openssl speed -multi {cores}` signing on the same cores, "
        f"and against the same server's HTTP floor (`GET /healthz`, same wrk): "
        f"{get('tokens', 'floor', 'issued'):.0f} requests/s, "
        f"{get('tokens', 'floor', 'server_us'):.1f} µs of the server's CPU each. "
        "The server's CPU per token leaves out wrk, which shares the cores; *by CPU* compares "
        "it with one openssl signature on one core.",
        "",
        "| key | tokens/s | openssl signatures/s | ratio | ratio to the HTTP floor "
        "| server CPU µs/token | openssl µs/signature | ratio by CPU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    floor = get("tokens", "floor", "issued")
    for algorithm in ("ES256", "RS256"):
        issued, raw = get("tokens", algorithm, "issued"), get("tokens", algorithm, "raw")
        server_us = get("tokens", algorithm, "server_us")
        signature_us = ratio(cores * 1e6, raw)
        out.append(
            f"| {algorithm} | {issued:.0f} | {raw:.0f} | {ratio(issued, raw):.2f}x "
            f"| {ratio(issued, floor):.2f}x | {server_us:.1f} | {signature_us:.1f} "
            f"| {ratio(signature_us, server_us):.2f}x |"
        )
    decisions = criterion(criterion_path)
    if decisions:
        out += [
            "",
            "**One decision** (criterion median; *reused*: a configured pooled instance, what "
            "nearly every request pays; *fresh*: the policy loaded anew from its cached "
            "compiled module, instantiated and configured, then asked: what the first request "
            "after a swap pays):",
            "",
            "| decision | µs |",
            "|---|---|",
        ]
        out += [f"| {name} | {micros:.2f} |" for name, micros in decisions]

    def target(label, value, goal):
        return f"- {label}: {value:.2f}x (target {goal}x) {'met' if value >= goal else '**missed**'}"

    at = 16 if 16 in connections else connections[-1]
    ceiling = get("manifests", CEILING, f"rate@{at}")
    nginx = get("manifests", NGINX, f"rate@{at}")
    out += ["", f"Targets ({at} connections for rates):"]
    for setup in GATEWAY:
        out.append(target(f"{setup} manifest rate vs ceiling", ratio(get("manifests", setup, f"rate@{at}"), ceiling), 0.8))
    for setup in GATEWAY:
        out.append(target(f"{setup} rate vs the nginx recipe", ratio(get("manifests", setup, f"rate@{at}"), nginx), 50))
    for kind in ("pull", "push"):
        out.append(target(f"gateway blob {kind} vs ceiling", ratio(get("blobs", GATEWAY[1], kind), get("blobs", CEILING, kind)), 0.8))
    relay = ratio(get("blobs", RELAY, "pull"), get("blobs", CEILING, "pull"))
    out.append(f"  - the bare TCP relay's pull, the bound of any proxy that copies the bytes: {relay:.2f}x")
    for algorithm in ("ES256", "RS256"):
        out.append(target(f"{algorithm} token issuance vs raw signing", ratio(get("tokens", algorithm, "issued"), get("tokens", algorithm, "raw")), 0.5))
    print("\n".join(out))


main()
