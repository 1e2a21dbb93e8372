"""Tables and plots from ``python -m bench.peers.run``'s results JSON: ``report.md``, PNGs, and the compare section of
``bench/README.md`` (between ``<!-- compare:begin -->`` and ``<!-- compare:end -->``, appended if missing)."""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

LABEL = {"fastreplay": "fastreplay", "cpprb": "cpprb", "sb3": "SB3", "torchrl": "TorchRL", "tianshou": "Tianshou",
         "reference": "reference (pure Python)", "floor": "memcpy floor"}
SHORT = {"reference": "reference", "floor": "floor"}
ORDER = ["fastreplay", "cpprb", "sb3", "torchrl", "tianshou", "reference", "floor"]
PEERS = ["cpprb", "sb3", "torchrl", "tianshou", "reference"]
COLOR = {"fastreplay": "#d62728", "cpprb": "#1f77b4", "sb3": "#2ca02c", "torchrl": "#9467bd", "tianshou": "#ff7f0e",
         "reference": "#7f7f7f", "floor": "#000000"}
ROWSET = {"small": "CartPole rows", "image": "image rows (uint8 4x84x84)"}
MODE = {"uniform": "uniform", "per": "prioritized"}
BEGIN, END = "<!-- compare:begin -->", "<!-- compare:end -->"


def fmt_t(s: Optional[float]) -> str:
    if s is None or not math.isfinite(s):
        return "n/a"
    us = s * 1e6
    if us >= 1000:
        return f"{us / 1000:.3g} ms"
    return f"{us:.3g} µs"


def fmt_ratio(r: float) -> str:
    if r >= 100:
        return f"{r:.0f}x"
    if r >= 10:
        return f"{r:.1f}x"
    return f"{r:.2f}x"


def op_label(op: str, batch: int, mode: str = "uniform") -> str:
    if op == "add":
        return f"add({batch})"
    if op == "sample":
        return f"sample({batch}{', beta' if mode == 'per' else ''})"
    if op == "sample+update":
        return f"sample({batch}) + update_priorities"
    if op == "sample_mt":
        return f"sample({batch}), 2 threads"
    if op == "prefetch":
        return f"background sampler({batch}), 2 threads"
    return f"{op}({batch})"


def cap_label(c: int) -> str:
    e = int(round(math.log10(c)))
    return f"1e{e}" if 10**e == c else f"{c:,}"


class Results:
    def __init__(self, data: Dict[str, Any]) -> None:
        self.data = data
        self.meta = data["meta"]
        self.plan = self.meta["plan"]
        self.idx: Dict[Tuple, Dict[str, Any]] = {}
        for r in data["results"]:
            self.idx[(r["lib"], r["rowset"], r["mode"], r["op"], r["capacity"], r["batch"])] = r
        self.libs = [l for l in ORDER if any(r["lib"] == l and "median_s" in r for r in data["results"])]
        self.groups = data["groups"]

    def get(self, lib, rowset, mode, op, cap, batch) -> Optional[Dict[str, Any]]:
        r = self.idx.get((lib, rowset, mode, op, cap, batch))
        return r if r is not None and "median_s" in r else None

    def t(self, *key) -> Optional[float]:
        r = self.get(*key)
        return r["median_s"] if r else None

    def floor(self, rowset, mode, op, cap, batch) -> Optional[float]:
        return self.t("floor", rowset, mode, op, cap, batch)

    def info(self, lib) -> Dict[str, Any]:
        for g in self.groups:
            if g.get("lib") == lib and g.get("info"):
                return g["info"]
        return {}

    def keys(self, rowset: str, mode: str) -> List[Tuple[str, int, int]]:
        """(op, capacity, batch) rows of a table in display order."""
        seen = {(r["op"], r["capacity"], r["batch"]) for r in self.data["results"]
                if r["rowset"] == rowset and r["mode"] == mode}
        order = {"add": 0, "sample": 1, "sample+update": 2, "sample_mt": 3, "prefetch": 4}
        return sorted(seen, key=lambda k: (order.get(k[0], 9), k[2] if k[0] == "add" else 0, k[1], k[2]))

    # headline workloads: (title, rowset, mode, op, capacity, batch)
    def headline(self) -> List[Tuple[str, str, str, str, int, int]]:
        S, I = self.plan["small"]["capacities"][-1], self.plan["image"]["capacities"][-1]
        b, bi, n = self.plan["small"]["batch"], self.plan["image"]["batch"], self.plan["n_vec"]
        rows = [
            (f"CartPole add 1 transition, {cap_label(S)}", "small", "uniform", "add", S, 1),
            (f"CartPole add {n} rows (vector env), {cap_label(S)}", "small", "uniform", "add", S, n),
            (f"CartPole sample({b}), {cap_label(S)}", "small", "uniform", "sample", S, b),
            (f"CartPole sample({b}) on 2 threads, per batch, {cap_label(S)}", "small", "uniform", "sample_mt", S, b),
            (f"CartPole PER sample({b}), {cap_label(S)}", "small", "per", "sample", S, b),
            (f"CartPole PER sample({b}) + update, {cap_label(S)}", "small", "per", "sample+update", S, b),
            (f"Image add 1 transition, {cap_label(I)}", "image", "uniform", "add", I, 1),
            (f"Image sample({bi}), {cap_label(I)}", "image", "uniform", "sample", I, bi),
            (f"Image PER sample({bi}) + update, {cap_label(I)}", "image", "per", "sample+update", I, bi),
        ]
        return [r for r in rows if any(self.get(l, *r[1:]) for l in self.libs)]


# ------------------------------------------------------------------------------------------------------------
# Markdown


def cell(R: Results, lib: str, key, base: Optional[float], ratio: bool = True) -> str:
    r = R.get(lib, *key)
    if r is None:
        e = R.idx.get((lib, *key))
        return "error" if e is not None and "error" in e else "n/a"
    s = f"{fmt_t(r['median_s'])} ±{r['iqr_rel'] * 100:.0f}%"
    if ratio and base and lib != "fastreplay":
        s += f" ({fmt_ratio(r['median_s'] / base)})"
    if r.get("check", "ok").startswith("FAIL"):
        s += " **check failed**"
    return s


def summary_table(R: Results) -> str:
    cols = [l for l in ORDER if l in R.libs]
    lines = ["| Workload | " + " | ".join(LABEL[l] for l in cols) + " |",
             "|---|" + "---|" * len(cols)]
    for title, *key in R.headline():
        base = R.t("fastreplay", *key)
        cells = []
        for l in cols:
            r = R.get(l, *key)
            if r is None:
                cells.append("n/a")
                continue
            s = fmt_t(r["median_s"])
            if l == "fastreplay":
                s = f"**{s}**"
            elif base:
                s += f" ({fmt_ratio(r['median_s'] / base)})"
            if r.get("check", "ok").startswith("FAIL"):
                s += " **check failed**"
            cells.append(s)
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(R: Results, rowset: str, mode: str) -> str:
    cols = [l for l in ORDER if l in R.libs]
    lines = ["| Operation | Capacity | " + " | ".join(LABEL[l] for l in cols) + " |",
             "|---|---|" + "---|" * len(cols)]
    for op, cap, b in R.keys(rowset, mode):
        key = (rowset, mode, op, cap, b)
        base = R.t("fastreplay", *key)
        cells = [cell(R, l, key, base) for l in cols]
        lines.append(f"| {op_label(op, b, mode)} | {cap_label(cap)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def mt_table(R: Results) -> str:
    S = R.plan["small"]["capacities"][-1]
    I = R.plan["image"]["capacities"][-1]
    out = ["| Rows | Library | sample, 1 thread | sample, 2 Python threads (per batch) | speed-up | "
           "library's background sampler, 2 threads (per batch) | speed-up |", "|---|---|---|---|---|---|---|"]
    for rowset, cap, b in (("small", S, R.plan["small"]["batch"]), ("image", I, R.plan["image"]["batch"])):
        for l in [x for x in ORDER if x in R.libs]:
            r = R.get(l, rowset, "uniform", "sample_mt", cap, b)
            one_main = R.t(l, rowset, "uniform", "sample", cap, b)
            pf = R.t(l, rowset, "uniform", "prefetch", cap, b)
            if r is None and one_main is None:
                continue
            one = float(np.median(r["single_rounds_s"])) if r and r.get("single_rounds_s") else one_main
            mt = r["median_s"] if r else None
            out.append(f"| {ROWSET[rowset].split(' (')[0]} B={b}, {cap_label(cap)} | {LABEL[l]} | {fmt_t(one)} | "
                       f"{fmt_t(mt)} | {fmt_ratio(one / mt) if one and mt else 'n/a'} | "
                       f"{fmt_t(pf) if pf else 'none'} | {fmt_ratio(one_main / pf) if one_main and pf else ''} |")
    return "\n".join(out) + (
        "\n\nThe 1-thread and 2-thread rounds (50 ms each) alternate, so both see the same competing load; the "
        "background sampler's speed-up is against the main single-thread `sample` figure.")


def libraries_table(R: Results) -> str:
    out = ["| Library | Version | Used as | Status |", "|---|---|---|---|"]
    for lib in ORDER:
        gs = [g for g in R.groups if g.get("lib") == lib]
        if not gs:
            continue
        info = R.info(lib)
        ok = [f"{g['rowset']} {g['mode']}" for g in gs if g.get("status") == "ok"]
        other: Dict[Tuple[str, str], List[str]] = {}
        for g in gs:
            if g.get("status") == "ok" and not g.get("notes"):
                continue
            where = f"{g['rowset']} {g['mode']}" if g.get("rowset") else ""
            for n in g.get("notes") or [""]:
                other.setdefault((g.get("status", "?"), n), []).append(where)
        if ok and not other:
            status = "measured"
        else:
            parts = [f"measured: {', '.join(ok)}"] if ok else []
            for (st, n), wh in other.items():
                wh = list(dict.fromkeys(w for w in wh if w))
                parts.append(f"{st}{' (' + ', '.join(wh) + ')' if wh else ''}{': ' + n if n else ''}")
            status = "; ".join(parts).replace("|", "/")
        ver = info.get("version") or "-"
        if lib == "torchrl" and info.get("tensordict"):
            ver += f" (tensordict {info['tensordict']})"
        out.append(f"| {LABEL[lib]} | {ver} | {info.get('description', '-')} | {status} |")
    return "\n".join(out)


def flags(R: Results) -> List[str]:
    out: List[str] = []
    for r in R.data["results"]:
        where = f"{LABEL[r['lib']]}, {ROWSET[r['rowset']]} {MODE[r['mode']]} {op_label(r['op'], r['batch'], r['mode'])} @ {cap_label(r['capacity'])}"
        if "error" in r:
            out.append(f"**Error**: {where}: {r['error']}")
        elif r.get("check", "ok").startswith("FAIL"):
            out.append(f"**Check failed**: {where}: {r['check'][6:]}")
    at_floor = []
    for r in R.data["results"]:
        if "median_s" not in r or r["lib"] == "floor":
            continue
        f = R.floor(r["rowset"], r["mode"], r["op"], r["capacity"], r["batch"])
        if not f or r["median_s"] >= f:
            continue
        what = (f"{LABEL[r['lib']]}, {ROWSET[r['rowset']]} {MODE[r['mode']]} "
                f"{op_label(r['op'], r['batch'], r['mode'])} @ {cap_label(r['capacity'])}: "
                f"{fmt_t(r['median_s'])} vs floor {fmt_t(f)}")
        if r["median_s"] < 0.9 * f:
            out.append(f"**Faster than the memcpy floor by more than 10%** (suspicious): {what}")
        else:
            at_floor.append(what)
    if at_floor:
        out.append("At the memcpy floor (faster by less than 10%, within noise and the floor's own numpy call "
                   "overhead): " + "; ".join(at_floor))
    for r in R.data["results"]:
        if "median_s" not in r or r["lib"] in ("fastreplay", "floor", "reference"):
            continue
        base = R.t("fastreplay", r["rowset"], r["mode"], r["op"], r["capacity"], r["batch"])
        if base and r["median_s"] < base:
            out.append(f"Peer faster than fastreplay: {LABEL[r['lib']]}, {ROWSET[r['rowset']]} {MODE[r['mode']]} "
                       f"{op_label(r['op'], r['batch'], r['mode'])} @ {cap_label(r['capacity'])}: "
                       f"{fmt_t(r['median_s'])} vs {fmt_t(base)}")
    for title, *key in R.headline():
        for l in ("fastreplay", *PEERS, "floor"):
            r = R.get(l, *key)
            pm = (r or {}).get("pass_medians_s") or []
            if len(pm) > 1 and max(pm) > 1.3 * min(pm):
                out.append(f"Passes disagree by more than 30%: {LABEL[l]}, {title}: "
                           + " / ".join(fmt_t(x) for x in pm))
    noisy = [r for r in R.data["results"] if r.get("iqr_rel", 0) > 0.25 and r["lib"] in ("fastreplay", *PEERS)]
    if noisy:
        out.append(f"Noisy (IQR > 25% of the median; {len(noisy)} of {len(R.data['results'])} figures): " + ", ".join(
            f"{SHORT.get(r['lib'], LABEL[r['lib']])} {r['rowset']} {r['mode']} {op_label(r['op'], r['batch'])} "
            f"@ {cap_label(r['capacity'])} ({r['iqr_rel'] * 100:.0f}%)" for r in noisy))
    return out


def headline_ratios(R: Results) -> List[str]:
    out = []
    for title, *key in R.headline():
        base = R.t("fastreplay", *key)
        if not base:
            continue
        parts = []
        for l in PEERS:
            t = R.t(l, *key)
            if t:
                parts.append(f"{LABEL[l]} {fmt_ratio(t / base)}")
        f = R.t("floor", *key)
        fl = f", {f / base * 100:.0f}% of the floor's speed" if f else ""
        out.append(f"{title}: fastreplay {fmt_t(base)}{fl}; " + (", ".join(parts) + " slower" if parts else "no peer"))
    return out


def machine_line(meta: Dict[str, Any]) -> str:
    m = meta["machine"]
    v = {k: x for k, x in m["versions"].items() if x}
    return (f"{m.get('Model name', '?')}, {m.get('CPU(s)', m.get('cpu_count'))} CPUs "
            f"({m.get('Core(s) per socket', '?')} cores per socket, {m.get('Thread(s) per core', '?')} thread per core"
            f"{', ' + m['Hypervisor vendor'] + ' guest' if m.get('Hypervisor vendor') else ''}), "
            f"{m.get('memory_gib', '?')} GiB; Python {m['python']}; "
            + ", ".join(f"{k} {x}" for k, x in v.items()))


def body(R: Results, img_prefix: str, full_tables: bool) -> str:
    meta = R.meta
    load = meta.get("load", {})
    cpus = meta["machine"].get("cpu_count") or 1
    loaded = load.get("max", 0) > 0.75 * cpus
    p = R.plan
    lines = [
        f"- Command: `{meta['command']}`"
        + (f" (run under `nice -n {meta['nice']}`)" if meta.get("nice") else "")
        + f"; {meta['started']} to {meta['finished']} ({meta['wall_s'] / 60:.1f} min), fastreplay at "
        f"`{meta['machine'].get('git', '?')}`.",
        f"- Machine: {machine_line(meta)}.",
        f"- Load average (1 min) during the run: {load.get('min', 0):.1f} to {load.get('max', 0):.1f} "
        f"(mean {load.get('mean', 0):.1f}) on {cpus} CPUs."
        + (" **The machine was shared with other work**: absolute times are pessimistic and noisy; medians over "
           "short rounds are used, and the ratios (measured minutes apart) are the robust figures." if loaded else ""),
        f"- Each figure: median over {p['timing']['rounds'] * meta.get('passes', 1)} rounds "
        f"({meta.get('passes', 1)} pass(es) over all libraries, in alternating order, {p['timing']['rounds']} rounds "
        f"each; a round is ~{p['timing']['round_s'] * 1e3:g} ms of calls, or one call if that takes longer) of the mean "
        f"time per call, ± the interquartile range as % of the median; (N.Nx) = time / fastreplay's time. Buffers are "
        f"full before timing. torch-based peers use {meta['torch_threads']} intra-op thread(s).",
        "",
        "### Libraries",
        "",
        libraries_table(R),
        "",
        "### Summary",
        "",
        summary_table(R),
        "",
        f"![time per operation, all libraries]({img_prefix}summary.png)",
        "",
        "Headline ratios (peer time / fastreplay time):",
        "",
        *[f"- {h}" for h in headline_ratios(R)],
        "",
        "### Plots",
        "",
        f"![time per operation vs capacity]({img_prefix}capacity.png)",
        "",
        f"![time per operation vs batch size]({img_prefix}batch.png)",
        "",
        f"![throughput relative to a plain copy of the same bytes]({img_prefix}floor.png)",
        "",
        "### Multi-threaded sampling",
        "",
        mt_table(R),
        "",
        f"A second thread can only help when the second of the {cpus} CPUs is free; the load average during the "
        f"run (above) says how often it was not, so read the speed-ups as what this machine gave, not as how each "
        "library scales. Samplers that release the GIL while they copy (fastreplay's `sample` and C++ prefetch "
        "threads, numpy fancy indexing, torch) can overlap; GIL-bound Python work cannot.",
        "",
        "### How to read this",
        "",
        "- **Floor**: `np.copyto` of the same number of bytes from one contiguous place (`bench/peers/lib_floor.py`)."
        " A sample gathers B rows from random places, so for small rows the floor is far below what any buffer can "
        "reach (and it includes numpy's own call overhead); for image rows the copy dominates and the floor is the "
        "real limit. The floor's figure is its fastest pass's median (other work only slows a copy down), so a "
        "library a few % faster than the floor is within noise.",
        "- **Same data, native form**: every library stores obs, action, reward, next_obs and done, and gets its "
        "input the way its documentation shows (numpy arrays and Python scalars; TensorDicts for TorchRL, Batch "
        "objects for Tianshou, built before timing). One-env adds go to a one-env buffer; 16-row adds to the "
        "library's vector-env buffer where it has one (SB3 `n_envs=16`, Tianshou `VectorReplayBuffer`).",
        "- **Checks**: every row is derived from a ticket k stored in `action`; after each timed operation a batch is "
        "checked field by field, against the range of tickets stored, and for repeats (a batch of a few rows "
        "repeated) and out-of-range importance weights.",
        "- **Not covered**: GPU storage or device transfer, n-step returns, frame-stack deduplication (cpprb "
        "`next_of`/`stack_compress`, SB3 `optimize_memory_usage`, Tianshou `ignore_obs_next`), and multi-process "
        "buffers.",
        "",
    ]
    fl = flags(R)
    lines += ["### Checks and flags", ""]
    n_checked = sum(1 for r in R.data["results"] if r.get("check") not in (None, "n/a"))
    n_failed = sum(1 for r in R.data["results"] if str(r.get("check", "")).startswith("FAIL"))
    lines.append(f"{n_checked} timed operations were checked row by row ({n_failed} failed).")
    lines.append("")
    lines += [f"- {x}" for x in fl] or ["- nothing flagged"]
    lines.append("")
    if full_tables:
        for rowset in ("small", "image"):
            for mode in ("uniform", "per"):
                if R.keys(rowset, mode):
                    lines += [f"### {ROWSET[rowset]}, {MODE[mode]}", "", detail_table(R, rowset, mode), ""]
    return "\n".join(lines)


def write_all(data: Dict[str, Any], out_dir: Path, readme: Optional[Path]) -> None:
    R = Results(data)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots(R, out_dir)
    md = ["# fastreplay against cpprb, Stable-Baselines3, TorchRL and Tianshou", "",
          "Generated by `python -m bench.peers.run` from `results.json` in this folder; see the docstring of "
          "`bench/peers/run.py` for the method.", "", body(R, "", True)]
    (out_dir / "report.md").write_text("\n".join(md) + "\n")
    print(f"wrote {out_dir / 'report.md'} and plots", flush=True)
    if readme is not None:
        rel = out_dir.resolve().relative_to(readme.parent.resolve())
        section = "\n".join([
            BEGIN, "",
            "## Comparison with other replay buffers",
            "",
            f"`python -m bench.peers.run` (needs `pip install fastreplay[compare]`) rewrites this section, "
            f"[{rel}/report.md]({rel}/report.md) (every figure, per capacity and batch size) and "
            f"[{rel}/results.json]({rel}/results.json) (all figures, versions, machine). "
            "`--quick` is a short smoke run.",
            "",
            body(R, f"{rel}/", False),
            f"Per-capacity and per-batch-size tables: [{rel}/report.md]({rel}/report.md).",
            "", END])
        text = readme.read_text() if readme.exists() else ""
        if BEGIN in text and END in text:
            a, b = text.index(BEGIN), text.index(END) + len(END)
            text = text[:a] + section + text[b:]
        else:
            text = text.rstrip("\n") + "\n\n" + section + "\n"
        readme.write_text(text)
        print(f"rewrote the compare section of {readme}", flush=True)


# ------------------------------------------------------------------------------------------------------------
# Plots


def plots(R: Results, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(ax, rowset, mode, op, xs, key_of, title):
        for l in [x for x in ORDER if x in R.libs]:
            pts = [(x, R.get(l, rowset, mode, op, *key_of(x))) for x in xs]
            pts = [(x, r) for x, r in pts if r]
            if not pts:
                continue
            x = np.array([p[0] for p in pts], float)
            med = np.array([p[1]["median_s"] for p in pts]) * 1e6
            lo = med - np.array([p[1]["q1_s"] for p in pts]) * 1e6
            hi = np.array([p[1]["q3_s"] for p in pts]) * 1e6 - med
            ax.errorbar(x, med, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], marker="o", ms=4, capsize=2,
                        color=COLOR[l], ls="--" if l == "floor" else "-", lw=2.2 if l == "fastreplay" else 1.2,
                        label=LABEL[l])
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="both", alpha=0.3)

    p = R.plan
    caps_s, caps_i = p["small"]["capacities"], p["image"]["capacities"]
    b, bi, n = p["small"]["batch"], p["image"]["batch"], p["n_vec"]
    panels = [("small", "uniform", "add", caps_s, 1, "CartPole add(1)"),
              ("small", "uniform", "add", caps_s, n, f"CartPole add({n})"),
              ("small", "uniform", "sample", caps_s, b, f"CartPole sample({b})"),
              ("small", "per", "sample+update", caps_s, b, f"CartPole PER sample({b}) + update"),
              ("image", "uniform", "sample", caps_i, bi, f"Image sample({bi})"),
              ("image", "per", "sample+update", caps_i, bi, f"Image PER sample({bi}) + update")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7.5))
    for ax, (rs, mode, op, caps, bb, title) in zip(axes.flat, panels):
        series(ax, rs, mode, op, caps, lambda c, bb=bb: (c, bb), title)
        ax.set_xlabel("capacity (transitions)")
        ax.set_ylabel("µs per call")
    _legend(fig, axes)
    fig.suptitle("Time per operation vs capacity (median, IQR bars; lower is better)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(out / "capacity.png", dpi=110)
    plt.close(fig)

    S, I = caps_s[-1], caps_i[-1]
    panels = [("small", "uniform", "sample", p["small"]["batches"], S, f"CartPole sample(B), {cap_label(S)}"),
              ("small", "per", "sample+update", p["small"]["batches"], S,
               f"CartPole PER sample(B) + update, {cap_label(S)}"),
              ("image", "uniform", "sample", p["image"]["batches"], I, f"Image sample(B), {cap_label(I)}")]
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    for ax, (rs, mode, op, bs, cap, title) in zip(axes.flat, panels):
        series(ax, rs, mode, op, bs, lambda x, cap=cap: (cap, x), title)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("µs per call")
        ax.set_xticks(bs)
        ax.set_xticklabels([str(x) for x in bs])
        ax.minorticks_off()
    _legend(fig, axes)
    fig.suptitle("Time per operation vs batch size (median, IQR bars; lower is better)")
    fig.tight_layout(rect=(0, 0.1, 1, 0.94))
    fig.savefig(out / "batch.png", dpi=110)
    plt.close(fig)

    # throughput relative to the floor
    heads = [h for h in R.headline() if h[3] != "sample_mt"]
    libs = [l for l in ORDER if l in R.libs and l != "floor"]
    fig, ax = plt.subplots(figsize=(13, 5))
    w = 0.8 / max(len(libs), 1)
    for j, l in enumerate(libs):
        vals = []
        for _, *key in heads:
            t, f = R.t(l, *key), R.t("floor", *key)
            vals.append(f / t if t and f else np.nan)
        ax.bar(np.arange(len(heads)) + (j - (len(libs) - 1) / 2) * w, vals, w, color=COLOR[l], label=LABEL[l])
    ax.axhline(1.0, color="k", ls="--", lw=1)
    ax.text(len(heads) - 0.5, 1.05, "memcpy floor", ha="right", va="bottom", fontsize=8)
    ax.set_yscale("log")
    ax.set_xticks(np.arange(len(heads)))
    ax.set_xticklabels([_wrap(h[0]) for h in heads], fontsize=8)
    ax.set_ylabel("throughput / plain-copy throughput")
    ax.set_title("Throughput relative to np.copyto of the same bytes (1 = the floor; higher is better)")
    ax.grid(True, axis="y", which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=len(libs), loc="upper center", bbox_to_anchor=(0.5, -0.2))
    fig.tight_layout()
    fig.savefig(out / "floor.png", dpi=110)
    plt.close(fig)

    # summary: one plot for the project README
    heads = R.headline()
    libs = [l for l in ORDER if l in R.libs]
    fig, ax = plt.subplots(figsize=(11, 0.75 * len(heads) + 1.8))
    h = 0.8 / max(len(libs), 1)
    for j, l in enumerate(libs):
        vals = [(R.t(l, *key) or np.nan) * 1e6 for _, *key in heads]
        ax.barh(np.arange(len(heads)) + (j - (len(libs) - 1) / 2) * h, vals, h, color=COLOR[l], label=LABEL[l],
                hatch="//" if l == "floor" else None, alpha=0.35 if l == "floor" else 1.0)
    ax.set_xscale("log")
    ax.set_yticks(np.arange(len(heads)))
    ax.set_yticklabels([t for t, *_ in heads], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("µs per call (log scale; lower is better)")
    ax.set_title("fastreplay vs other replay buffers (median time per call)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), fontsize=8, ncol=len(libs), loc="lower center")
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(out / "summary.png", dpi=110)
    plt.close(fig)


def _legend(fig, axes) -> None:
    handles, labels = {}, {}
    for ax in np.ravel(axes):
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lb, hd)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=len(handles), fontsize=9)


def _wrap(s: str, width: int = 22) -> str:
    words, lines, cur = s.split(), [], ""
    for w_ in words:
        if len(cur) + len(w_) + 1 > width and cur:
            lines.append(cur)
            cur = w_
        else:
            cur = f"{cur} {w_}".strip()
    lines.append(cur)
    return "\n".join(lines)
