"""Prints the tables of integration/bench/run.sh from the raw samples in
its work directory (argv: WORK SIGNALS STARTS HF_RUNS IDLE_SECS PAUSE_US
ORPHANS WRK_SECS). Markdown on stdout."""

import json
import re
import statistics
import sys
from pathlib import Path

work = Path(sys.argv[1])
signals, starts, hf_runs, idle_secs, pause_us, orphans, wrk_secs = sys.argv[2:9]
ctx = dict(l.split("=", 1) for l in (work / "context").read_text().splitlines())
inits = ["drainit", "tini-static", "tini", "dumb-init", "catatonit"]
inits += ctx["extras"].split()
names = ["none"] + inits
label = {n: n for n in names}
label["none"] = "none (baseline: app alone)"
for n in ctx["extras"].split():
    label[n] = f"{n} ({ctx['path.' + n]})"


def pct(sorted_v, p):
    i = max(0, min(len(sorted_v) - 1, -(-len(sorted_v) * p // 100) - 1))
    return sorted_v[int(i)]


def msd(v):
    return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)


def siglat(path):
    """Latencies, and the init's mean CPU time per signal over the runs."""
    lat, cpu = [], []
    for line in path.read_text().splitlines():
        if line.startswith("# cpu "):
            cpu.append(float(line.split()[2]))
        elif line.strip():
            lat.append(float(line))
    lat.sort()
    return (pct(lat, 50), pct(lat, 90), pct(lat, 99), len(lat)), statistics.mean(cpu)


sig, sigpin, sigcpu, start, total = {}, {}, {}, {}, {}
for n in names:
    sig[n], _ = siglat(work / f"siglat.{n}")
    sigpin[n], sigcpu[n] = siglat(work / f"siglat_pin.{n}")
    rows = [l.split() for l in (work / f"startup.{n}").read_text().splitlines()]
    e2e = [float(r[0]) for r in rows]
    tot = [float(r[1]) for r in rows]
    start[n] = (*msd(e2e), statistics.median(e2e), len(e2e))
    total[n] = (*msd(tot), statistics.median(tot))
hf = {r["command"]: r for r in json.loads((work / "hyperfine.json").read_text())["results"]}

idle, size, term, orph, term_settled = {}, {}, {}, {}, {}
for n in inits:
    idle[n] = dict(l.split("=", 1) for l in (work / f"idle.{n}").read_text().splitlines())
    b, link = (work / f"size.{n}").read_text().split()
    size[n] = (int(b), link)
    t = sorted(float(l) for l in (work / f"sigterm.{n}").read_text().split())
    term[n] = (pct(t, 50), pct(t, 99), len(t))
    settled = work / f"sigterm-settled.{n}"
    ts = sorted(float(l) for l in settled.read_text().split()) if settled.exists() else []
    term_settled[n] = pct(ts, 50) if ts else float("nan")
    o = [l.split() for l in (work / f"orphans.{n}").read_text().splitlines() if l.strip()]
    orph[n] = (statistics.median(float(r[0]) for r in o) / 1000, max(int(r[1]) for r in o), len(o))


def ctxt(n):
    return int(idle[n]["ctxt_after"]) - int(idle[n]["ctxt_before"])


# The summary: one row per init, then drainit's ratio to tini-static.
cols = [
    ("size KiB", lambda n: size[n][0] / 1024, "{:.0f}"),
    ("start-up exec→app µs p50", lambda n: start[n][2], "{:.0f}"),
    ("signal fwd µs p50 (1 CPU)", lambda n: sigpin[n][0], "{:.1f}"),
    ("signal fwd µs p99 (1 CPU)", lambda n: sigpin[n][2], "{:.1f}"),
    ("init CPU µs per signal", lambda n: sigcpu[n], "{:.1f}"),
    ("SIGTERM→exit µs p50", lambda n: term[n][0], "{:.0f}"),
    ("SIGTERM→exit µs p99", lambda n: term[n][1], "{:.0f}"),
    ("SIGTERM→exit µs p50, 20 ms after ready", lambda n: term_settled[n], "{:.0f}"),
    ("idle RSS KiB", lambda n: int(idle[n]["rss_kb"]), "{:d}"),
    (f"idle ctx switches / syscalls in {idle_secs}s",
     lambda n: (ctxt(n), int(idle[n]["syscalls"])), "{0[0]} / {0[1]}"),
    (f"reap {orphans} orphans ms p50", lambda n: orph[n][0], "{:.0f}"),
    ("zombies left", lambda n: orph[n][1], "{:d}"),
]
print(f"## drainit benchmark (commit {ctx['commit']})\n")
print(f"Machine: {ctx['nproc']} CPUs ({ctx['cpu']}), kernel {ctx['kernel']}; "
      f"load average before {ctx['load_before']}, after {ctx['load_after']}.\n")
print("| init | " + " | ".join(c[0] for c in cols) + " |")
print("|---|" + "---:|" * len(cols))
for n in inits:
    print(f"| {label[n]} | " + " | ".join(f.format(get(n)) for _, get, f in cols) + " |")


def ratio(n, get):
    a, b = get(n), get("tini-static")
    if isinstance(a, tuple):
        return "=" if a == b else f"{a[0]} / {a[1]} vs {b[0]} / {b[1]}"
    if b:
        return f"×{a / b:.2f}"
    return "=" if a == b else "–"


for n in [x for x in inits if x.startswith("drainit")]:
    print(f"| {n} ÷ tini-static | " + " | ".join(ratio(n, get) for _, get, _ in cols) + " |")

# drainit's server.
h = dict(l.split("=", 1) for l in (work / "http").read_text().splitlines())


def wrk(path):
    text = path.read_text()
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", text).group(1))
    m = re.search(r"99%\s+([\d.]+)(us|ms|s)\b", text)
    p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
    errors = re.search(r"Socket errors:.*", text)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return rps, p99, (errors.group(0) if errors else ""), (non2xx.group(1) if non2xx else "0")


w64, w1000 = wrk(work / "wrk64"), wrk(work / "wrk1000")
pre = sorted(float(l) for l in (work / "prestop").read_text().split())
print("\n| drainit, server on | figure |")
print("|---|---:|")
print(f"| idle RSS with the server listening | {h['idle_rss_kb']} KiB |")
print(f"| /healthz, wrk -t2 -c64 {wrk_secs}s | {w64[0]:.0f} req/s, p99 {w64[1]:.2f} ms |")
print(f"| /healthz, wrk -t2 -c1000 {wrk_secs}s | {w1000[0]:.0f} req/s, p99 {w1000[1]:.2f} ms |")
nginx64 = work / "wrk64.nginx"
if nginx64.exists() and "Requests/sec" in nginx64.read_text():
    n64 = wrk(nginx64)
    print(f"| nginx (1 worker, `return 200`), wrk -t2 -c64 {wrk_secs}s | {n64[0]:.0f} req/s, "
          f"p99 {n64[1]:.2f} ms (drainit ÷ nginx: ×{w64[0] / n64[0]:.2f} req/s) |")
print(f"| peak RSS under 1000 connections | {h['peak1000_rss_kb']} KiB "
      f"(after the run: {h['after1000_rss_kb']} KiB) |")
print(f"| GET /prestop → /readyz 503, µs median (min–max, {len(pre)} runs) | "
      f"{statistics.median(pre):.0f} ({pre[0]:.0f}–{pre[-1]:.0f}) |")
for tag, w in (("64", w64), ("1000", w1000)):
    if w[2] or w[3] != "0":
        print(f"\nwrk -c{tag}: {w[2]}; non-2xx answers: {w[3]}")

# Details.
print("\nDetails:\n")
print("| init | linkage | signal fwd µs p50 / p90 / p99 | "
      "signal fwd, 1 CPU, µs p50 / p90 / p99 | "
      "start-up exec→app µs mean ± sd | start→exit µs mean ± sd (p50) | "
      "hyperfine `-- /bin/true` µs mean ± sd | idle PSS KiB | threads |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for n in names:
    s, p, st, tt = sig[n], sigpin[n], start[n], total[n]
    hcol = f"{hf[n]['mean'] * 1e6:.0f} ± {hf[n]['stddev'] * 1e6:.0f}" if n in hf else "–"
    tail = ["–", "–", "–"] if n == "none" else [size[n][1], idle[n]["pss_kb"], idle[n]["threads"]]
    print(f"| {label[n]} | {tail[0]} | {s[0]:.1f} / {s[1]:.1f} / {s[2]:.1f} | "
          f"{p[0]:.1f} / {p[1]:.1f} / {p[2]:.1f} | {st[0]:.0f} ± {st[1]:.0f} | "
          f"{tt[0]:.0f} ± {tt[1]:.0f} ({tt[2]:.0f}) | {hcol} | {tail[1]} | {tail[2]} |")

details = "; ".join(f"{n}: {idle[n]['strace_detail'] or 'none'}" for n in inits)
print(f"\nIdle syscalls by name: {details}.\n")
print(f"Samples: {sig['drainit'][3]} signals per init (pause {pause_us} µs after each "
      f"acknowledgement), {start['drainit'][3]} starts per init in a fresh PID namespace, "
      f"{term['drainit'][2]} SIGTERMs per init, {orph['drainit'][2]} orphan runs per init, "
      f"{hf_runs} hyperfine runs (not PID 1). Forwarding targets are each init's default: "
      "drainit and dumb-init signal the app's process group, tini and catatonit the app alone.")
