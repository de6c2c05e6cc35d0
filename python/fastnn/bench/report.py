"""The bench's outputs: results.json, the terminal table, results.md, the README block and the PNGs.

All plain Python, run in the parent; the charts need matplotlib (and so NumPy),
so `charts` draws them in a process of its own.
"""
import json
import os
import re
import subprocess
import sys

from . import cases

METHOD = ("each framework configuration runs in its own worker process; the parent only schedules; every candidate "
          "is warmed up, then rounds run every worker once, one at a time, in a rotating order, after the previous "
          "worker's threads have stopped spinning; each kernel sample is the mean of enough back-to-back calls to "
          "last min_time; each round is charged with the CPU share other processes used meanwhile, extra rounds run "
          "(up to max_reps_factor x reps) while fewer than reps rounds were quiet, and the quietest are kept; times "
          "are medians over the kept rounds, ratios medians of the per-round ratios. GFLOP/s count 2*M*N*K per GEMM; "
          "GB/s count the bytes each kernel must read and write once.")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"
KERNEL_COLUMNS = [("fastnn-numpy", "fastnn numpy"), ("fastnn-numba", "fastnn numba"), ("fastnn-cpp", "fastnn cpp"),
                  ("PyTorch", "PyTorch"), ("JAX", "JAX"), (cases.MEDIUM, "fastnn cpp medium (bf16)"),
                  ("PyTorch bf16", "PyTorch bf16")]
SUMMARY_KERNELS = [("matmul", "128x784x256"), ("linear_backward", "128x784->256"), ("softmax_cross_entropy", "128x10"),
                   ("adam_step", "784-256-128-10")]


def add_fractions_of_peak(res):
    """Throughput as a share of the FMA peak (float32 GFLOP/s), of the bf16 dot-product peak
    (bfloat16 GFLOP/s) or of the copy bandwidth (GB/s)."""
    peak, copy = res["peak"].get("gflops"), res["copy_bandwidth"].get("gbs")
    bf16_peak = res.get("bf16_peak", {}).get("gflops")
    for row in res["kernels"]:
        flops_peak = bf16_peak if row.get("precision") == "bfloat16" else peak
        ref = {"GFLOP/s": flops_peak, "GB/s": copy}.get(row["unit"])  # dense-equivalent rates are not comparable
        row["fraction_of_peak"] = row["throughput"] / ref if ref and row.get("throughput") else None


def write(res, out, readme=None, env=None):
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(res, f, indent=1)
    with open(os.path.join(out, "results.md"), "w", encoding="utf-8") as f:
        f.write(format_markdown(res))
    subprocess.run([sys.executable, "-m", "fastnn.bench.charts", out], env=env, check=True, timeout=300)
    if readme:
        rel = os.path.relpath(os.path.abspath(out), os.path.dirname(os.path.abspath(readme)))
        update_readme(readme, format_summary(res, None if rel.startswith("..") else rel))


# ================================================================== formatting

def fmt_time(s):
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.1f} us"
    return f"{s * 1e3:.2f} ms" if s < 1 else f"{s:.2f} s"


def fmt_ratio(r):
    return "-" if r is None else (f"{r:.2f}x" if r < 10 else f"{r:.1f}x")


def kernel_cases(res):
    """[(kernel, shape, {column: row})], the columns of KERNEL_COLUMNS plus 'textbook'."""
    out, index = [], {}
    for row in res["kernels"]:
        key = (row["kernel"], row["shape"])
        if key not in index:
            index[key] = {}
            out.append((row["kernel"], row["shape"], index[key]))
        if row["framework"] == "textbook NumPy":
            index[key]["textbook"] = row
        elif row.get("precision") == "bfloat16" and row["framework"] != "fastnn":
            index[key][row["framework"] + " bf16"] = row
        elif row["framework"] == "fastnn":
            index[key][row["worker"]] = row
        elif row["headline"]:
            index[key][row["framework"]] = row
    return out


def _machine_line(res):
    m, v = res["machine"], res["machine"]["versions"]
    fi = m["fastnn"]
    libs = ", ".join(f"{k} {v[k]}" for k in ("numpy", "numba", "torch", "jax", "scikit-learn") if v.get(k))
    return (f"{m['cpu']} ({m.get('physical_cores') or m['logical_cpus']} cores / {m['logical_cpus']} threads, "
            f"{'/'.join(f for f in m['isa_flags'] if f in ('avx2', 'fma', 'avx512f')) or 'no AVX'}), "
            f"{m['memory_gib']} GiB; fastnn {fi['version']} backend {fi['backend']} ISA {fi['isa']}, "
            f"{res['threads']} threads; Python {v['python']}, {libs}")


def _peak_line(res):
    p, c = res["peak"], res["copy_bandwidth"]
    fma = (f"{p['gflops']:.0f} GFLOP/s on {p.get('threads')} threads ({p.get('gflops_1thread') or 0:.0f} on 1; "
           f"{p.get('estimate')})" if p.get("gflops") else f"not measured ({p.get('error')})")
    b = res.get("bf16_peak", {})
    bf16 = (f"{b['gflops']:.0f} GFLOP/s ({b.get('gflops_1thread') or 0:.0f} on 1)" if b.get("gflops")
            else f"not measured ({b.get('error')})")
    bw = f"{c['gbs']:.1f} GB/s" if c.get("gbs") else "not measured"
    return f"measured float32 FMA peak {fma}; bf16 dot-product peak {bf16}; copy bandwidth {bw}"


def _target_cells(t, markdown=False):
    if t["measured"] is None:
        measured = "n/a"
    else:
        measured = f"{t['measured']:.2f} s" if t["unit"] == "s" else fmt_ratio(t["measured"])
    goal = f"{t['comparison']} {t['target']:g}{' s' if t['unit'] == 's' else 'x'}"
    if markdown:
        goal = goal.replace(">=", "≥").replace("<=", "≤")
        mark = {True: "✅ met", False: "❌ not met", None: "– not measured"}[t["met"]]
    else:
        mark = {True: "met", False: "NOT MET", None: "not measured"}[t["met"]]
    if t.get("note"):
        measured += f" ({t['note']})"
    return measured, goal, mark


def _table(header, rows, markdown, right_from=1):
    if markdown:
        return ["| " + " | ".join(header) + " |",
                "|" + "|".join("---" if i < right_from else "---:" for i in range(len(header))) + "|"] + \
            ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]

    def line(r):
        return "  ".join(str(v).ljust(w) if i < right_from else str(v).rjust(w) for i, (v, w) in
                         enumerate(zip(r, widths)))
    return [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]


def _sections(res, markdown):
    """The tables both the terminal and results.md show, as (title, header, rows, right_from)."""
    head = res["headline"]
    out = [("Targets", ["target", "vs", "measured", "goal", ""],
            [[t["name"], t["vs"], *_target_cells(t, markdown)] for t in res["targets"]], 2)]
    krows = []
    for kernel, shape, cols in kernel_cases(res):
        main = cols.get(res["headline_worker"], {})
        thr, frac = main.get("throughput"), main.get("fraction_of_peak")
        cells = [fmt_ratio(cols.get(c, {}).get("ratio_vs_textbook")) for c, _ in KERNEL_COLUMNS]
        krows.append([kernel, re.sub(r"(?<=\d)x(?=\d)", "×", shape) if markdown else shape,
                      fmt_time(cols.get("textbook", {}).get("seconds"))] + cells
                     + [f"{thr:.1f} {main['unit']}" if thr else "-", f"{100 * frac:.0f}%" if frac else "-"])
    out.append((f"Kernels: time of the textbook NumPy code, and each framework's speed-up over it (higher is "
                f"faster; PyTorch and JAX at their faster configuration); {head} throughput and its share of the "
                f"measured peak (FMA peak for GFLOP/s, copy bandwidth for GB/s: small shapes run from cache and can "
                f"exceed it)",
                ["kernel", "shape", "textbook NumPy"] + [t for _, t in KERNEL_COLUMNS] + [f"{head} throughput",
                                                                                       "of peak"], krows, 2))
    brows = []
    for kernel, shape, cols in kernel_cases(res):
        medium, torch_bf16 = cols.get(cases.MEDIUM), cols.get("PyTorch bf16")
        if not medium:
            continue
        cells = []
        for row in (medium, torch_bf16):
            thr, frac = (row or {}).get("throughput"), (row or {}).get("fraction_of_peak")
            cells += [f"{thr:.0f}" if thr else "-", f"{100 * frac:.0f}%" if frac else "-"]
        brows.append([kernel, re.sub(r"(?<=\d)x(?=\d)", "×", shape) if markdown else shape,
                      fmt_ratio(medium.get("ratio_vs_textbook")),
                      fmt_ratio((cols.get(res["headline_worker"]) or {}).get("ratio_medium_faster")),
                      fmt_ratio((torch_bf16 or {}).get("ratio_medium_faster"))] + cells)
    if brows:
        out.append(("bfloat16 matmuls: fastnn in matmul precision \"medium\" (float32 arrays, inputs rounded to "
                    "bf16, float32 sums) against NumPy's float32, fastnn's \"highest\" and PyTorch's torch.mm on "
                    "bf16 tensors; GFLOP/s and share of the measured bf16 dot-product peak",
                    ["kernel", "shape", "medium vs NumPy", "medium vs highest", "medium vs PyTorch bf16",
                     "medium GFLOP/s", "of bf16 peak", "PyTorch bf16 GFLOP/s", "of bf16 peak"], brows, 2))
    e = res.get("mnist_epoch_setup") or {}
    out.append((f"MNIST epoch: {e.get('architecture')}, {e.get('optimizer')}, batch {e.get('batch_size')}, "
                f"{e.get('samples_per_epoch')} samples ({e.get('data')}), median of {e.get('repetitions')}; "
                f"{e.get('same_work')}", ["framework", "configuration", "seconds", "fastnn faster by",
                                          "fastnn medium faster by", "test accuracy after"],
                [[r["framework"] + (" *" if r["headline"] else ""), r["config"], f"{r['seconds']:.3f}",
                  fmt_ratio(r["ratio_fastnn_faster"]), fmt_ratio(r.get("ratio_medium_faster")),
                  f"{100 * r['test_accuracy_after']:.2f}% ({r['epochs_trained']} ep.)"] for r in res["mnist_epoch"]],
                2))
    t = res.get("time_to_98_setup")
    if t:
        out.append((f"Time to {100 * t['target_accuracy']:.0f}% test accuracy: {t['method']}; recipe "
                    f"{_recipe(t['recipe'])}; median of {t['repetitions']}",
                    ["framework", "configuration", "training seconds", "epochs", "test accuracy"],
                    [[r["framework"] + (" *" if r["headline"] else ""), r["config"],
                      f"{r['seconds']:.2f}" if r["reached"] else "not reached", r["epochs"],
                      f"{100 * r['test_accuracy']:.2f}%"] for r in res["time_to_98"]], 2))
    if res["neighbour"]:
        out.append(("A good neighbour: an op timed right after a fastnn kernel, against the op alone (same process); "
                    "for comparison, the op after a busy-wait as long as the kernel, with no fastnn call",
                    ["framework", "op", "right after", "alone", "after fastnn", "slowdown", "after the busy-wait",
                     "its slowdown"],
                    [[r["framework"], r["op"], r["after"], fmt_time(r["alone_seconds"]),
                      fmt_time(r["after_fastnn_seconds"]), fmt_ratio(r["slowdown"]),
                      fmt_time(r["after_pause_seconds"]), fmt_ratio(r["pause_slowdown"])]
                     for r in res["neighbour"]], 3))
    if res["sklearn_fit"]:
        out.append(("MLPClassifier fit on MNIST, each in its own process",
                    ["framework", "configuration", "fit seconds", "fastnn faster by", "test accuracy"],
                    [[r["framework"], r["config"], f"{r['seconds']:.2f}", fmt_ratio(r["ratio_fastnn_faster"]),
                      f"{100 * r['test_accuracy']:.2f}%"] for r in res["sklearn_fit"]], 2))
    return out


def _recipe(r):
    return (f"{','.join(map(str, r['hidden']))} {r['activation']}, {r['optimizer']}, {r['schedule']} lr {r['lr']:g}, "
            f"label smoothing {r['label_smoothing']:g}, batch {r['batch_size']}, up to {r['epochs']} epochs")


def _notes(res):
    notes = []
    share = res["machine"].get("other_processes_cpu_share")
    if share is not None and share > 0.1:
        notes.append(f"Busy machine: other processes used {100 * share:.0f}% of the CPUs during the run "
                     f"(load average {res['machine']['load_average_at_start']} at its start): timings are unreliable.")
    if res["mode"] != "full":
        notes.append(f"{res['mode']} mode: fewer repetitions, smaller epochs; indicative numbers only.")
    if res["skipped"]:
        notes.append("Skipped: " + "; ".join(f"{k}: {v}" for k, v in res["skipped"].items()) + ".")
    if res["errors"]:
        notes.append("Errors: " + "; ".join(f"{k}: {m}" for section in res["errors"].values()
                                             for k, m in section.items()) + ".")
    return notes


def format_terminal(res):
    lines = [f"fastnn bench ({res['mode']}) -- {res['date']}", "machine: " + _machine_line(res),
             "peak:    " + _peak_line(res)]
    for title, header, rows, right in _sections(res, markdown=False):
        lines += ["", title] + _table(header, rows, False, right)
    return "\n".join(lines + [""] + _notes(res))


def format_markdown(res, image_dir=""):
    out = [f"Measured on **{res['date']}** ({res['mode']} run of `fastnn bench`) on: {_machine_line(res)}.", "",
           f"Method: {res['method']} Baseline: {_peak_line(res)}. float32 arrays throughout; only the "
           "\"medium\" and bf16 rows round the matmuls' inputs to bfloat16. * marks the configuration "
           "that counts for each framework (fastnn's default backend, each peer's faster one).", ""]
    out += [f"> {n}" for n in _notes(res)] + ([""] if _notes(res) else [])
    for title, header, rows, right in _sections(res, markdown=True):
        out += [f"**{title}**", ""] + _table(header, rows, True, right) + [""]
    if image_dir is not None:
        prefix = (image_dir.rstrip("/") + "/") if image_dir else ""
        out += [f"![Kernel speed-ups over textbook NumPy]({prefix}kernels.png)", "",
                f"![MNIST epoch time per framework]({prefix}epoch.png)"]
    return "\n".join(out) + "\n"


def _headline_ratio(rows, framework, key="ratio_fastnn_faster"):
    return next((r.get(key) for r in rows if r["framework"] == framework and r["headline"]), None)


def format_summary(res, results_dir):
    """The README's block: one table of headline ratios, three lines of method, a link to the rest."""
    head, peers = res["headline_worker"], ("textbook NumPy", "PyTorch", "JAX")
    rows = []
    for kernel, shape, cols in kernel_cases(res):
        if (kernel, shape) not in SUMMARY_KERNELS or head not in cols:
            continue
        ours = cols[head]
        cells = [fmt_ratio(ours.get("ratio_vs_textbook"))]
        for peer in peers[1:]:
            other = cols.get(peer)
            cells.append(fmt_ratio(other.get("ratio_fastnn_faster")) if other else "-")
        frac = ours.get("fraction_of_peak")
        rows.append([f"{kernel} {re.sub(r'(?<=[0-9])x(?=[0-9])', '×', shape)}"] + cells
                    + [f"{100 * frac:.0f}% of FMA peak" if frac and ours["unit"] == "GFLOP/s" else ""])
    e = res["mnist_epoch"]
    rows.append(["MNIST epoch"] + [fmt_ratio(_headline_ratio(e, p)) for p in peers] + [""])
    rows.append(_time_to_98_row(res["time_to_98"], head, peers, "time to 98% test accuracy"))
    for kernel, shape, cols in kernel_cases(res):
        medium = cols.get(cases.MEDIUM)
        if (kernel, shape) != SUMMARY_KERNELS[0] or not medium:
            continue
        frac = medium.get("fraction_of_peak")
        rows.append([f"{kernel} {re.sub(r'(?<=[0-9])x(?=[0-9])', '×', shape)}, medium (bf16)",
                     fmt_ratio(medium.get("ratio_vs_textbook")),
                     fmt_ratio(cols.get("PyTorch bf16", {}).get("ratio_medium_faster")), "-",
                     f"{100 * frac:.0f}% of bf16 peak" if frac else ""])
    medium_epoch = next((r for r in e if r["worker"] == cases.MEDIUM), None)
    if medium_epoch:
        highest = next((r for r in e if r["worker"] == head), {})
        rows.append(["MNIST epoch, medium (bf16)"] + [fmt_ratio(_headline_ratio(e, p, "ratio_medium_faster"))
                                                      for p in peers]
                    + [f"{fmt_ratio(highest.get('ratio_medium_faster'))} highest"])
    if any(r["worker"] == cases.MEDIUM for r in res["time_to_98"]):
        rows.append(_time_to_98_row(res["time_to_98"], cases.MEDIUM, peers, "time to 98%, medium (bf16)"))
    link = f"{results_dir.rstrip('/')}/results.md" if results_dir else "results.md"
    out = [f"How many times faster fastnn ({res['headline']} backend) is, measured on {res['date']} "
           f"({res['mode']} run) on {res['machine']['cpu']}, {res['threads']} threads:", ""]
    out += _table(["", "vs textbook NumPy", "vs PyTorch", "vs JAX", "fastnn itself"], rows, True) + [""]
    out += ["Method: every framework runs alone in its own process, at its best documented configuration (PyTorch "
            "at 1 thread and at all cores, JAX per-step jit and whole-epoch jit + scan; the faster counts),",
            "on the same data, initial weights and batches; rounds interleave the frameworks one at a time, and "
            "ratios are medians of per-round ratios.",
            f"Full tables (kernels, bf16, epoch, time to 98%, neighbour, scikit-learn fit), machine and peaks: "
            f"[{link}]({link})."]
    return "\n".join(out) + "\n"


def _time_to_98_row(t, worker, peers, title):
    ours = next((r for r in t if r["worker"] == worker and r["seconds"]), None)
    cells = []
    for peer in peers:
        other = next((r for r in t if r["framework"] == peer and r["headline"] and r["seconds"]), None)
        cells.append(fmt_ratio(other["seconds"] / ours["seconds"]) if ours and other else "-")
    return [title] + cells + [f"{ours['seconds']:.2f} s" if ours else ""]


def update_readme(readme, markdown):
    """Put `markdown` between the README's bench markers (adding them under "## Performance" when missing)."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    block = f"{START}\n{markdown.rstrip()}\n{END}"
    if START in text and END in text and text.index(START) < text.index(END):
        text = text[:text.index(START)] + block + text[text.index(END) + len(END):]
    else:
        lines = text.split("\n")
        heading = next((i for i, line in enumerate(lines) if line.strip().lower() == "## performance"), None)
        if heading is None:
            text = text.rstrip("\n") + f"\n\n## Performance\n\n{block}\n"
        else:
            end = next((i for i in range(heading + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
            tail = "\n".join(lines[end:])
            text = "\n".join(lines[:heading + 1]) + f"\n\n{block}\n" + ("\n" + tail if tail else "")
    tmp = readme + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, readme)
