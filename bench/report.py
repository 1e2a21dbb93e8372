"""Run the benchmark suites and write their tables into bench/README.md.

    python -m bench.report                        # run the suites (~5-8 min on 2 cores), then write the tables
    python -m bench.report --json results.json    # only write the tables, from a pytest-benchmark JSON file

Run it from the repository root (``python bench/report.py`` works too: it imports nothing from the project). The
suites run as ``python -m pytest bench ... --benchmark-json=bench/results/pytest_bench.json`` (the exact command is
printed and written into the README). Only the part of bench/README.md between the ``report:begin`` and ``report:end``
markers is replaced, so notes written around it survive a rerun.

Every figure is the median over rounds (pytest-benchmark's calibrated rounds, each round long enough that the
timer's cost vanishes); the spread column is the interquartile range over the median, a measure of timing noise.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from collections import defaultdict
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
README = os.path.join(HERE, "README.md")
DEFAULT_JSON = os.path.join(HERE, "results", "pytest_bench.json")
BEGIN, END = "<!-- report:begin -->", "<!-- report:end -->"

# Options of the run behind bench/README.md: rounds of >= 100 us (so a sub-microsecond call is timed over ~100s of
# iterations, not one), up to 1 s per benchmark after a warmup, at least 5 rounds even for the slowest calls.
PYTEST_OPTIONS = [
    "-p", "no:cacheprovider", "--benchmark-enable", "--benchmark-only",
    "--benchmark-min-time=0.0001", "--benchmark-max-time=1.0", "--benchmark-min-rounds=5",
    "--benchmark-warmup=on", "--benchmark-warmup-iterations=1000",
    "--benchmark-columns=median,iqr,rounds,iterations", "--benchmark-sort=name", "-q",
]

# Issue targets (capacity 1e6, CartPole rows unless said otherwise).
TARGETS = [
    # (label, requirement text, kind, op, capacity, how to turn the median into the compared figure, limit, sense)
    ("CartPole add one transition (keyword API), 1e6", "<= 1.0 µs", "cartpole", "add(1)", 10**6, "us", 1.0, "<="),
    ("CartPole add 16 rows at once, 1e6", ">= 10 M rows/s", "cartpole", "add(16)", 10**6, "Mrows/s", 10.0, ">="),
    ("CartPole sample(256), 1e6 (issue 19)", "<= 2.5 µs", "cartpole", "sample(256)", 10**6, "us", 2.5, "<="),
    ("CartPole sample(256, out=batch), 1e6 (issue 19)", "<= 2.5 µs", "cartpole", "sample(256, out=)", 10**6, "us", 2.5,
     "<="),
    ("Atari sample(32): obs+next_obs bandwidth / plain copy", ">= 95%", "atari", "sample(32)", 10**5, "copy%", 95.0,
     ">="),
    ("PER sample(256, beta) then update_priorities(256), 1e6 (issue 19)", "<= 20 µs", "per", "sample+update(256)",
     10**6, "us", 20.0, "<="),
]

SECTIONS = [
    ("Uniform replay, CartPole rows (buffer full)", "cartpole",
     ["add(1)", "add(1) numpy scalars", "add(16)", "sample(32)", "sample(256)", "sample(256, out=)", "sample(1024)"]),
    ("Uniform replay, Atari rows (capacity 1e5, 5e4 stored)", "atari", ["add(1)", "sample(32)", "sample(32, out=)"]),
    ("Prioritized replay, CartPole rows (buffer full, Pareto priorities, beta 0.4)", "per",
     ["add(1)", "sample(1)", "sample(32)", "sample(256)", "sample(1024)", "update_priorities(1)",
      "update_priorities(32)", "update_priorities(256)", "update_priorities(1024)", "sample+update(1)",
      "sample+update(32)", "sample+update(256)", "sample+update(1024)"]),
]


def pytest_command(json_path: str) -> List[str]:
    return [sys.executable, "-m", "pytest", "bench", *PYTEST_OPTIONS, f"--benchmark-json={json_path}"]


def shown_command(json_path: str) -> str:
    rel = os.path.relpath(json_path, ROOT)
    return " ".join(["python -m pytest bench", *map(shlex.quote, PYTEST_OPTIONS), f"--benchmark-json={rel}"])


# --- formatting -----------------------------------------------------------------------------------------------------

def fmt_time(seconds: Optional[float]) -> str:
    if seconds is None:
        return "–"
    us = seconds * 1e6
    if us < 10:
        return f"{us:.2f} µs"
    if us < 1000:
        return f"{us:.1f} µs"
    if us < 1e6:
        return f"{us / 1e3:.2f} ms"
    return f"{us / 1e6:.2f} s"


def fmt_rate(per_second: float, unit: str) -> str:
    for scale, prefix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if per_second >= scale:
            return f"{per_second / scale:.3g} {prefix}{unit}/s"
    return f"{per_second:.3g} {unit}/s"


def fmt_cap(capacity: int) -> str:
    if capacity <= 0:
        return ""
    exp = round(math.log10(capacity))
    return f"1e{exp}" if capacity == 10**exp else f"{capacity:,}"


# --- reading the JSON -----------------------------------------------------------------------------------------------

class Results:
    def __init__(self, data: dict) -> None:
        self.data = data
        # (kind, op, capacity) -> impl -> benchmark entry
        self.by_key: Dict[Tuple[str, str, int], Dict[str, dict]] = defaultdict(dict)
        for b in data["benchmarks"]:
            x = b.get("extra_info", {})
            if "op" not in x:
                continue
            self.by_key[(x["kind"], x["op"], int(x["capacity"]))][x["impl"]] = b

    def get(self, kind: str, op: str, capacity: int, impl: str) -> Optional[dict]:
        return self.by_key.get((kind, op, capacity), {}).get(impl)

    def median(self, kind: str, op: str, capacity: int, impl: str) -> Optional[float]:
        b = self.get(kind, op, capacity, impl)
        return None if b is None else b["stats"]["median"]

    def floors(self) -> List[dict]:
        """The plain-copy benchmarks (whole 256 MiB array, and the same copy in pieces)."""
        return [b for b in self.data["benchmarks"] if b.get("extra_info", {}).get("kind") == "floor"]

    def copy_bandwidth(self) -> Optional[float]:
        """Plain-copy bandwidth in bytes/s: the highest of the floors' median and best-round figures, so a floor
        slowed down by other processes does not flatter the ratio."""
        bws = [b["extra_info"]["bytes"] / b["stats"][stat] for b in self.floors() for stat in ("median", "min")]
        return max(bws) if bws else None

    def bandwidth_ratio(self, b: dict, stat: str = "median") -> Optional[float]:
        """A benchmark's bytes/s (from its median or best round) as a fraction of the plain-copy bandwidth."""
        floor = self.copy_bandwidth()
        if floor is None or not b["extra_info"].get("bytes"):
            return None
        return b["extra_info"]["bytes"] / b["stats"][stat] / floor


def spread(b: Optional[dict]) -> str:
    if b is None:
        return "–"
    return f"{100 * b['stats']['iqr'] / b['stats']['median']:.0f}%"


# --- the markdown ---------------------------------------------------------------------------------------------------

def targets_table(r: Results) -> List[str]:
    lines = ["| Target | Required | Measured (fastreplay, median) | Reference (median) | Status |",
             "|---|---|---|---|---|"]
    for label, req, kind, op, cap, how, limit, sense in TARGETS:
        b = r.get(kind, op, cap, "fastreplay")
        ref = r.get(kind, op, cap, "reference")
        if b is None:
            lines.append(f"| {label} | {req} | not run | | – |")
            continue
        med = b["stats"]["median"]
        ref_text = fmt_time(ref["stats"]["median"]) if ref else "–"
        if how == "us":
            value, text = med * 1e6, fmt_time(med)
        elif how == "Mrows/s":
            value = b["extra_info"]["rows"] / med / 1e6
            text = f"{value:.1f} M rows/s ({fmt_time(med)} per call)"
            if ref:
                ref_text = f"{ref['extra_info']['rows'] / ref['stats']['median'] / 1e6:.2f} M rows/s"
        elif how == "copy%":
            ratio = r.bandwidth_ratio(b)
            if ratio is None:
                lines.append(f"| {label} | {req} | no plain-copy benchmark in this run | | – |")
                continue
            value = 100 * ratio
            bw = b["extra_info"]["bytes"] / med / 1e9
            text = (f"{value:.0f}% ({bw:.2f} GB/s vs {r.copy_bandwidth() / 1e9:.2f} GB/s; best rounds: "
                    f"{100 * r.bandwidth_ratio(b, 'min'):.0f}%)")
            if ref:
                ref_text = f"{100 * r.bandwidth_ratio(ref):.0f}%"
        else:
            raise ValueError(how)
        met = value <= limit if sense == "<=" else value >= limit
        lines.append(f"| {label} | {req} | {text} | {ref_text} | {'met' if met else '**not met**'} |")
    return lines


def section_table(r: Results, kind: str, ops: List[str]) -> List[str]:
    lines = ["| Operation | Capacity | fastreplay | reference | Speedup | Speedup (best rounds) "
             "| fastreplay throughput | fastreplay spread |",
             "|---|---|---|---|---|---|---|---|"]
    keys = sorted((k for k in r.by_key if k[0] == kind),
                  key=lambda k: (ops.index(k[1]) if k[1] in ops else len(ops), k[1], k[2]))
    for _, op, cap in keys:
        fr_b, ref_b = r.get(kind, op, cap, "fastreplay"), r.get(kind, op, cap, "reference")
        if fr_b is None and ref_b is None:
            continue
        fr_t = fr_b["stats"]["median"] if fr_b else None
        ref_t = ref_b["stats"]["median"] if ref_b else None
        speedup = f"{ref_t / fr_t:.1f}x" if fr_t and ref_t else "–"
        best = f"{ref_b['stats']['min'] / fr_b['stats']['min']:.1f}x" if fr_t and ref_t else "–"
        thr = "–"
        if fr_b:
            x = fr_b["extra_info"]
            if x.get("bytes") and kind == "atari":
                thr = fmt_rate(x["bytes"] / fr_t, "B")
            elif x.get("rows"):
                thr = fmt_rate(x["rows"] / fr_t, "rows")
        lines.append(f"| {op} | {fmt_cap(cap)} | {fmt_time(fr_t)} | {fmt_time(ref_t)} | {speedup} | {best} | {thr} | "
                     f"{spread(fr_b)} |")
    return lines


def bandwidth_table(r: Results) -> List[str]:
    floor = r.copy_bandwidth()
    rows = [b for b in r.data["benchmarks"] if b.get("extra_info", {}).get("kind") == "atari"
            and b["extra_info"]["op"] != "add(1)"]
    if floor is None or not rows:
        return []
    per_call = rows[0]["extra_info"]["bytes"]
    lines = [f"Bytes moved per sample(32): obs + next_obs = 2 x 32 x 28,224 = {per_call:,} bytes "
             f"({per_call / 2**20:.2f} MiB). The plain-copy bandwidth, {floor / 1e9:.2f} GB/s, is the highest of "
             "the copy floors' median and best-round figures below (np.copyto of a 256 MiB contiguous array into "
             "another one, timed whole and in 4 MiB pieces, in the same run): on a loaded machine a copy of tens of "
             "ms is preempted far more often than a sample of ~0.2 ms, so the lower figures would flatter the "
             "ratio. The last column uses each row's median.",
             "",
             "| What | Median time per call | Bandwidth (median) | Bandwidth (best round) | % of plain copy |",
             "|---|---|---|---|---|"]
    entries = [(b["extra_info"]["op"].replace("memcpy", "plain copy, np.copyto"), b) for b in r.floors()]
    order = {"fastreplay": 0, "numpy": 1, "reference": 2}
    for b in sorted(rows, key=lambda b: (order.get(b["extra_info"]["impl"], 3), b["extra_info"]["op"])):
        x = b["extra_info"]
        entries.append((f"numpy: {x['op']}" if x["impl"] == "numpy" else f"{x['impl']} {x['op']}", b))
    for name, b in entries:
        st, nbytes = b["stats"], b["extra_info"]["bytes"]
        lines.append(f"| {name} | {fmt_time(st['median'])} | {nbytes / st['median'] / 1e9:.2f} GB/s | "
                     f"{nbytes / st['min'] / 1e9:.2f} GB/s | {100 * r.bandwidth_ratio(b):.0f}% |")
    return lines


def per_breakdown(r: Results) -> List[str]:
    """Where a PER step's time goes, from the suite's own rows (fastreplay, medians, batch 256)."""
    lines = ["| Capacity | uniform sample(256): draw + gather + batch | PER sample(256) | PER sample - uniform sample: "
             "descent, weights, generations | update_priorities(256) | sample + update, measured | "
             "sample + update, sum of parts |",
             "|---|---|---|---|---|---|---|"]
    for cap in sorted({k[2] for k in r.by_key if k[0] == "per"}):
        u = r.median("cartpole", "sample(256)", cap, "fastreplay")
        s = r.median("per", "sample(256)", cap, "fastreplay")
        up = r.median("per", "update_priorities(256)", cap, "fastreplay")
        loop = r.median("per", "sample+update(256)", cap, "fastreplay")
        if None in (u, s, up, loop):
            continue
        lines.append(f"| {fmt_cap(cap)} | {fmt_time(u)} | {fmt_time(s)} | {fmt_time(s - u)} | {fmt_time(up)} | "
                     f"{fmt_time(loop)} | {fmt_time(s + up)} |")
    if len(lines) == 2:
        return []
    s1 = r.median("per", "sample(1)", 10**6, "fastreplay")
    u1 = r.median("per", "update_priorities(1)", 10**6, "fastreplay")
    if s1 is not None and u1 is not None:
        lines += ["", f"Fixed cost of a call at 1e6 (batch 1: Python, bindings, validation, one descent or one leaf "
                      f"repair): sample(1) {fmt_time(s1)}, update_priorities(1) {fmt_time(u1)}."]
    return lines


def flags(r: Results) -> List[str]:
    """Rows worth a second look: fastreplay slower than or barely faster than the reference, and noisy rows."""
    out = []
    for (kind, op, cap), impls in sorted(r.by_key.items()):
        at = f" @ {fmt_cap(cap)}" if cap > 0 else ""
        fr_b, ref_b = impls.get("fastreplay"), impls.get("reference")
        if fr_b and ref_b:
            s = ref_b["stats"]["median"] / fr_b["stats"]["median"]
            if s < 2:
                out.append(f"- {kind} {op}{at}: fastreplay is only {s:.2f}x the reference "
                           f"({fmt_time(fr_b['stats']['median'])} vs {fmt_time(ref_b['stats']['median'])}).")
        for impl, b in impls.items():
            st = b["stats"]
            if st["iqr"] > 0.25 * st["median"]:
                out.append(f"- {kind} {op}{at} ({impl}): noisy, IQR {100 * st['iqr'] / st['median']:.0f}% "
                           f"of the median over {st['rounds']} rounds.")
    return out


def machine_section(r: Results, command: str) -> List[str]:
    mi = r.data.get("machine_info", {})
    fr = mi.get("fastreplay", {})
    loads = [b["extra_info"]["load1"] for b in r.data["benchmarks"] if "load1" in b.get("extra_info", {})]
    cpus = fr.get("cpus", "?")
    lines = [
        f"- Command (from the repository root; `python -m bench.report` runs it and rewrites this section):",
        "",
        "  ```",
        f"  {command}",
        "  python -m bench.report --json bench/results/pytest_bench.json",
        "  ```",
        f"- Run: {r.data.get('datetime', '?')}, fastreplay {fr.get('fastreplay', '?')} at commit "
        f"`{fr.get('git_commit', '?')}`.",
        f"- Machine: {fr.get('cpu_model', mi.get('cpu', {}).get('brand_raw', '?'))}, {cpus} CPUs "
        f"({fr.get('cores_per_socket', '?')} cores per socket, {fr.get('threads_per_core', '?')} thread per core"
        + (f", {fr['hypervisor']} guest" if fr.get("hypervisor") else "") + ").",
        f"- Python {fr.get('python', mi.get('python_version', '?'))}, numpy {fr.get('numpy', '?')}, "
        f"pytest-benchmark {r.data.get('version', '?')}.",
        f"- Extension: `{fr.get('core_path', '?')}` (modified {fr.get('core_mtime', '?')}).",
    ]
    if fr.get("load_at_start") and loads:
        start = fr["load_at_start"][0]
        lines.append(f"- Load average (1 min) at the start {start:.1f}, at the end {fr['load_at_end'][0]:.1f}, "
                     f"during the benchmarks {min(loads):.1f} to {max(loads):.1f}, on {cpus} CPUs.")
        try:
            if max(loads) > 0.75 * float(cpus):
                lines.append("  **The machine was loaded**: other processes competed for the CPUs during the run, so "
                             "absolute times are pessimistic and noisy (medians are used throughout).")
        except ValueError:
            pass
    return lines


def render(r: Results, command: str) -> str:
    out = [BEGIN, "", "## Results", ""]
    out += machine_section(r, command)
    out += ["", "### Targets", ""] + targets_table(r)
    for title, kind, ops in SECTIONS:
        table = section_table(r, kind, ops)
        if len(table) > 2:
            out += ["", f"### {title}", "", "Median time per call; speedup = reference / fastreplay "
                    "(of the medians, and of the fastest rounds, which other processes disturb least); spread = "
                    "interquartile range / median of fastreplay's rounds.", ""] + table
    pb = per_breakdown(r)
    if pb:
        out += ["", "### Prioritized replay: where the time goes (fastreplay, medians)", ""] + pb
    bw = bandwidth_table(r)
    if bw:
        out += ["", "### Atari sample(32) against the memory-copy floor", ""] + bw
    fl = flags(r)
    out += ["", "### Rows flagged automatically", ""] + (fl or ["- none"])
    out += ["", END]
    return "\n".join(out)


HEADER = """# Benchmarks

pytest-benchmark suites comparing fastreplay with the pure-Python reference implementation
(`fastreplay.reference`, the baseline), at capacities 1e4, 1e5 and 1e6:

- `test_bench_uniform.py`: uniform replay with CartPole rows (obs float32[4], action int64, reward float32,
  next_obs float32[4], done bool; buffer full) and Atari rows (obs and next_obs uint8[4, 84, 84]; capacity 1e5,
  5e4 stored), plus the memory-copy floor;
- `test_bench_prioritized.py`: prioritized replay with CartPole rows: sample, update_priorities, sample-then-update;
- `cpp/`: C++ microbenchmarks of the core (segment tree), run separately;
- `scripts/`: stand-alone benchmarks (concurrency, storage, the cpprb and SB3 drop-ins), and `peers/`: the
  comparison with other replay buffers; both run as modules from the repository root
  (`python -m bench.scripts.bench_concurrency`, `python -m bench.peers.run`), as their docstrings say;
- `results/`: what the runs write (JSON, plots, the peers' report.md); nothing in it is code.

`python -m bench.report` runs the suites and rewrites the generated section below.

"""


def write_readme(text: str) -> None:
    old = open(README).read() if os.path.exists(README) else HEADER
    if BEGIN in old and END in old:
        head, _, rest = old.partition(BEGIN)
        _, _, tail = rest.partition(END)
        new = head + text + tail
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    with open(README, "w") as f:
        f.write(new)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write the tables from this pytest-benchmark JSON instead of running the suites")
    ap.add_argument("--out", default=DEFAULT_JSON,
                    help="where a run writes its JSON (default: bench/results/pytest_bench.json)")
    ap.add_argument("pytest_args", nargs="*", help="extra arguments for pytest, e.g. -k 'cartpole'")
    args = ap.parse_args(argv)
    json_path = args.json or args.out
    command = shown_command(json_path)
    if not args.json:
        cmd = pytest_command(json_path) + list(args.pytest_args)
        print("+", " ".join(map(shlex.quote, cmd)), flush=True)
        rc = subprocess.call(cmd, cwd=ROOT)
        if rc != 0:
            print(f"pytest exited with {rc}; tables not written", file=sys.stderr)
            return rc
        if args.pytest_args:
            command += " " + " ".join(map(shlex.quote, args.pytest_args))
    with open(json_path) as f:
        data = json.load(f)
    if not args.json:  # pytest-benchmark stores every round's time; the stats are enough and keep the file small
        for b in data["benchmarks"]:
            b["stats"].pop("data", None)
        with open(json_path, "w") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
    results = Results(data)
    write_readme(render(results, command))
    print(f"wrote {os.path.relpath(README)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
