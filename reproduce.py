"""Regenerate the thesis's result tables: each cell trained by train.main, ours beside the thesis's.

Thesis: §5.1.1 and Table 5.1 (incremental ablation, U-Net [34] vs UNETR-2D Base), Table 5.2 (initial
filters of UNETR-2D Base), §5.2 and Table 5.4 (every network on Lucchi++ and Kasthuri++), §3.3, §5.3
and Table 5.5 (denoising pretexts, then fine-tuning), App. A Table A.1 (handed over to adapt.py).

    python reproduce.py 5.4 --data LUCCHI --data2 KASTHURI    # the thesis protocol, 10 seeds per cell
    python reproduce.py 5.1 --quick                          # the same table on synthetic data, minutes

Every cell is one train.py run folder, OUT/<table>/<data set>/<row>/seed-<k>, with seeds 0..N-1 for
--repeats N. A folder holding results.json is reused, one holding args.json is resumed, anything else
is trained, so an interrupted table goes on where it stopped and --repeats 10 after --repeats 3 trains
seeds 3-9 only. A finished folder must have been trained with the settings asked for now (epochs,
data, flags); otherwise the command stops and names the difference. Once a cell has its results.json
--drop-last removes the last.pt it has just written (model and optimiser state, only needed to resume,
~580 MB for UNETR-2D Base); best.pt always stays. The table is printed and written as OUT/table_<id>.md and OUT/table_<id>.json (every run).
Numbers are IoU_F mean ± std over seeds (the per-slice mean of §4.2; std with ddof 0, as train.py),
trainable parameters, and inference ms per patch (mean over seeds of each run's mean ± std).
"""
import argparse
import inspect
import json
import os
import subprocess
import sys
from dataclasses import dataclass

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: idle CPU threads sleep, never spin
import numpy as np

import evaluate
import models
import train

ADAPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "adapt.py")

# --quick: the built-in synthetic data and a budget that runs each table in minutes on a 2-core CPU.
# The rows keep their thesis architecture and filters; only tiles, images and epochs shrink.
QUICK = ["--tile", "32", "--image-side", "128", "--train-images", "3", "--test-images", "2", "--batch-size", "4"]
QUICK_EPOCHS = 4
QUICK_REPEATS = 1
THESIS_REPEATS = 10  # §5: every number is the mean ± std of 10 runs

DROPOUT = ["0.1", "0.1", "0.2", "0.2", "0.3"]  # §5.1.1 item 4, per level (bottleneck last)

# Table 5.1 (Lucchi test set, IoU_F). Rows in the thesis's order; each adds one §5.1.1 component.
ABLATION = [("baseline", "Baseline", None), ("da", "+ DA", "augment"),
            ("batch-norm", "+ Batch norm.", "batch_norm"), ("dropout", "+ Dropout", "dropout"),
            ("elu", "+ ELU", "elu"), ("he-normal", "+ He normal", "he_normal"),
            ("attention-gates", "+ Attention Gates", "attention_gates")]
# Table 5.1's marks (★ U-Net, ◆ UNETR-2D) and §5.1.1: a component that impaired the result was
# discarded from the rows below it; every other component stays once added.
DISCARDED = {"unet": {"batch_norm"}, "unetr2d": {"dropout", "elu", "attention_gates"}}
MARKS = {"unet": "★", "unetr2d": "◆"}
ABLATION_MODELS = [("unet", "U-Net [34]", ["--arch", "unet", "--filters", "16"]),
                   ("unetr2d", "UNETR-2D Base", ["--arch", "unetr2d", "--size", "base", "--filters", "16"])]
THESIS_5_1 = {
    "unet": {"baseline": "0.739 ± 0.002", "da": "0.871 ± 0.004", "batch-norm": "0.869 ± 0.002",
             "dropout": "0.881 ± 0.002", "elu": "0.881 ± 0.002", "he-normal": "0.881 ± 0.003",
             "attention-gates": "0.884 ± 0.002"},
    "unetr2d": {"baseline": "0.462 ± 0.024", "da": "0.774 ± 0.012", "batch-norm": "0.824 ± 0.011",
                "dropout": "0.819 ± 0.008", "elu": "0.813 ± 0.010", "he-normal": "0.829 ± 0.017",
                "attention-gates": "0.788 ± 0.014"},
}
# Table 5.2 (Lucchi++ test set): IoU_F of UNETR-2D Base by initial filters; params and ms: evaluate.py.
THESIS_5_2 = {8: "0.822 ± 0.022", 16: "0.846 ± 0.008", 32: "0.853 ± 0.010", 64: "0.850 ± 0.014"}
# Table 5.4: the thesis's model names, in its order.
MODELS_5_4 = [("unet", None, "2D U-Net [34]"), ("attention_unet", None, "2D Attention U-Net [34]")] + [
    (arch, size, f"{name} {size.capitalize()} (ours)")
    for arch, name in (("unetr2d", "UNETR-2D"), ("ynetr2d", "YNETR-2D")) for size in ("mini", "small", "base")]
# Table 5.5 (Lucchi++ test set, UNETR-2D Base): (degradation, thesis name, difference, IoU_F), its order.
THESIS_5_5 = [(None, "None - Baseline", "", "0.852 ± 0.015"),
              ("pixel_dropout", "Pixel dropout", "+0.009", "0.861 ± 0.011"),
              ("cutout", "Cutout", "+0.015", "0.867 ± 0.010"),
              ("defocus_blur", "Defocus blur", "+0.015", "0.867 ± 0.008"),
              ("gaussian_noise", "Additive Gaussian Noise", "+0.019", "0.871 ± 0.012"),
              ("salt_pepper", "Coarse salt and pepper", "+0.020", "0.872 ± 0.008"),
              ("gaussian_blur", "Gaussian filter", "+0.021", "0.873 ± 0.009"),
              ("motion_blur", "Motion blur", "+0.022", "0.874 ± 0.005"),
              ("low_resolution", "Low resolution emulation", "+0.024", "0.876 ± 0.007")]
TITLES = {"5.1": "Table 5.1: incremental ablation, U-Net vs UNETR-2D Base (thesis: Lucchi test set)",
          "5.2": "Table 5.2: initial filters of UNETR-2D Base (thesis: Lucchi++ test set)",
          "5.4": "Table 5.4: segmentation of every network (thesis: Lucchi++ and Kasthuri++)",
          "5.5": "Table 5.5: denoising pretexts before fine-tuning UNETR-2D Base (thesis: Lucchi++ test set)"}


class ReproduceError(train.RunError):
    """A problem with the command line or the output folder: one line, exit code 2."""


@dataclass
class Row:
    """One line of a table, trained once per seed. `pretrain`: the cell whose best.pt it starts from."""
    key: str        # --rows name, and the folder below the data set's
    group: str      # the data set (5.4) or the model column (5.1)
    label: str
    flags: list     # train.py flags of this row
    thesis: dict    # the thesis's numbers as printed: iou, params (millions), ms, delta
    pretrain: list = None  # train.py flags of the pre-training cell (Table 5.5)
    skip: str = ""  # why this row cannot be trained here


# ----------------------------------------------------------------------------------------------
# The tables as data: rows, their train.py flags and the thesis's numbers.

def ablation_flags(on):
    """train.py flags for the set of §5.1.1 components switched on (everything else at the baseline)."""
    return (([] if "augment" in on else ["--no-augment"])
            + ["--batch-norm" if "batch_norm" in on else "--no-batch-norm"]
            + ["--dropout", *(DROPOUT if "dropout" in on else ["0"])]
            + ["--activation", "elu" if "elu" in on else "relu"]
            + ["--init", "he_normal" if "he_normal" in on else "glorot_uniform"]
            + (["--attention-gates"] if "attention_gates" in on else []))


def rows_5_1(datasets):
    rows = []
    for arch, name, flags in ABLATION_MODELS:
        on = set()
        gates = "attention_gates" in inspect.signature(models.ARCHS[arch]["cls"]).parameters
        for key, label, component in ABLATION:
            kept = {c for c in on if c not in DISCARDED[arch]}
            on = kept | ({component} if component else set())
            mark = f" {MARKS[arch]}" if component in DISCARDED[arch] else ""
            skip = "" if component != "attention_gates" or gates else f"{arch} has no attention-gate option"
            rows.append(Row(f"{arch}/{key}", name, label + mark, flags + ablation_flags(on),
                            {"iou": THESIS_5_1[arch][key]}, skip=skip))
    return {datasets[0]: rows}


def rows_5_2(datasets):
    rows = [Row(f"filters-{f}", "", str(f), ["--arch", "unetr2d", "--size", "base", "--filters", str(f)],
                {"iou": THESIS_5_2[f], "params": evaluate.THESIS_PARAMS[("unetr2d", "base", f)],
                 "ms": evaluate.THESIS_MS[("unetr2d", "base", f)]}) for f in (8, 16, 32, 64)]
    return {datasets[0]: rows}


def rows_5_4(datasets):
    tables = {}
    for i, name in enumerate(datasets):
        # The thesis's data set for this one: named in the folder, else --data = Lucchi++, --data2 = Kasthuri++.
        thesis = "kasthuri" if "kasthuri" in name else "lucchi" if "lucchi" in name else ("lucchi", "kasthuri")[i]
        rows = []
        for arch, size, label in MODELS_5_4:
            filters = models.ARCHS[arch]["filters"]
            flags = ["--arch", arch, "--filters", str(filters)] + (["--size", size] if size else [])
            if name == "synthetic" and arch in train.DEMO_BATCH_NORM:
                flags.append("--no-batch-norm")  # --quick trains in demo mode; keep the thesis's network
            rows.append(Row(arch.replace("_", "-") + (f"-{size}" if size else ""), thesis, label, flags,
                            {"iou": evaluate.THESIS_IOU[thesis][(arch, size)],
                             "params": evaluate.THESIS_PARAMS[(arch, size, filters)],
                             "ms": evaluate.THESIS_MS[(arch, size, filters)]}))
        tables[name] = rows
    return tables


def rows_5_5(datasets):
    base = ["--arch", "unetr2d", "--size", "base", "--filters", "32"]
    rows = [Row(pretext or "baseline", "Denoise" if pretext else "None", label, base,
                {"iou": iou, "delta": delta}, pretrain=base + ["--pretext", pretext] if pretext else None)
            for pretext, label, delta, iou in THESIS_5_5]
    return {datasets[0]: rows}


TABLES = {"5.1": rows_5_1, "5.2": rows_5_2, "5.4": rows_5_4, "5.5": rows_5_5}


# ----------------------------------------------------------------------------------------------
# Cells: one train.py run folder each, reused when finished, resumed when interrupted.

IGNORED = {"out", "out_root", "resume", "device", "workers", "progress", "amp"}
PATHS = {"data", "init", "init_checkpoint"}


def check_same(folder, argv):
    """A folder trained with other settings would mix two protocols in one table: refuse it."""
    try:
        with open(os.path.join(folder, "args.json")) as f:
            saved = json.load(f)
    except (OSError, ValueError):
        return
    want = vars(train.parse_args(argv))
    norm = lambda k, v: os.path.realpath(v) if k in PATHS and isinstance(v, str) else v  # noqa: E731
    diff = [k for k in want if k not in IGNORED and k in saved and norm(k, saved[k]) != norm(k, want[k])]
    if diff:
        k = diff[0]
        raise ReproduceError(f"{folder} was trained with {k}={saved[k]!r}, this command asks for {want[k]!r}; "
                             "pass the settings it was run with, or a new --out")


def run_cell(folder, flags, seed, opts):
    """results.json of one run: read if finished, else trained (or resumed) by train.main."""
    argv = [*flags, "--seed", str(seed), "--device", opts.device, "--out", folder] + opts.train_flags
    done = os.path.join(folder, "results.json")
    started = os.path.isfile(os.path.join(folder, "args.json"))
    if started:
        check_same(folder, argv)
    if not os.path.isfile(done):
        print(f"\n== {folder}: {'resuming' if started else 'training'}", flush=True)
        try:
            train.main(["--out", folder, "--resume", "--device", opts.device] if started else argv)
        except SystemExit as exc:  # train.py has printed its one-line reason; an interruption can go on
            if exc.code == 130:
                print(f"interrupted in {folder}; the same command resumes it", file=sys.stderr)
            raise
        if opts.drop_last and os.path.isfile(os.path.join(folder, "last.pt")):
            os.remove(os.path.join(folder, "last.pt"))
    with open(done) as f:
        return json.load(f)


def run_table(table, opts):
    """{data set: [(row, [results per seed], [pre-training results per seed])]} for the rows asked for."""
    plan = TABLES[table](opts.names)
    wanted = set(opts.rows.split(",")) if opts.rows else None
    keys = [r.key for rows in plan.values() for r in rows]
    known = set(keys) | {k.split("/")[-1] for k in keys}  # 5.1: "unet/elu", or "elu" for both models
    if wanted and wanted - known:
        raise ReproduceError(f"--rows: unknown row {', '.join(sorted(wanted - known))}; "
                             f"table {table} has {', '.join(sorted(known))}")
    pick = lambda r: not r.skip and (wanted is None or r.key in wanted or r.key.split("/")[-1] in wanted)  # noqa: E731
    out = {name: [(r, [], []) for r in rows] for name, rows in plan.items()}
    for seed in range(opts.repeats):  # seed-major: an interrupted table has whole seeds first
        for (name, rows), data in zip(out.items(), opts.data):
            data_flags = ["--data", data] if data else []
            for row, runs, pre in rows:
                if not pick(row):
                    continue
                cell = os.path.join(opts.out, table, name, *row.key.split("/"))
                flags = data_flags + row.flags
                if row.pretrain:  # §5.3: pre-train on the pretext, then fine-tune from its best weights
                    pre_folder = os.path.join(f"{cell}-pretrain", f"seed-{seed}")
                    pre.append(run_cell(pre_folder, data_flags + row.pretrain, seed, opts))
                    flags = flags + ["--init", os.path.join(pre_folder, "best.pt")]
                runs.append(run_cell(os.path.join(cell, f"seed-{seed}"), flags, seed, opts))
    return out


# ----------------------------------------------------------------------------------------------
# Formatting: markdown, ours beside the thesis's.

def mean_std(values, digits=3):
    if not values:
        return "—"
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f}" + (f" ± {v.std():.{digits}f}" if len(v) > 1 else "")


def iou(runs):
    return mean_std([r["test_iou_f"] for r in runs])


def params(runs):
    return f"{runs[0]['params'] / 1e6:.3g}M" if runs else "—"


def ms(runs):
    if not runs:
        return "—"
    return (f"{np.mean([r['inference_ms_per_patch'] for r in runs]):.1f} ± "
            f"{np.mean([r['inference_ms_std'] for r in runs]):.1f}")


def markdown(header, lines):
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(line) + " |" for line in lines])


def format_table(table, results, opts):
    """The markdown table (in the thesis's layout) and its footnotes."""
    notes = []
    if table == "5.1":
        (name, rows), = results.items()
        by_key = {r.key: (r, runs) for r, runs, _ in rows}
        header = ["Method"] + [f"{m} {w}" for _, m, _ in ABLATION_MODELS for w in ("(ours)", "(thesis)")]
        lines = []
        for key, label, component in ABLATION:
            line = [label + "".join(f" {MARKS[a]}" for a, _, _ in ABLATION_MODELS if component in DISCARDED[a])]
            for arch, _, _ in ABLATION_MODELS:
                row, runs = by_key[f"{arch}/{key}"]
                line += ["n/a" if row.skip else iou(runs), row.thesis["iou"]]
            lines.append(line)
        notes = ["★ discarded on U-Net, ◆ discarded on UNETR-2D (§5.1.1): the rows below run without it."]
        notes += [f"n/a: {r.skip} (unetr2d.py)." for r, _, _ in rows if r.skip]
    elif table == "5.2":
        (name, rows), = results.items()
        header = ["N initial filters", "IoU_F (ours)", "IoU_F (thesis)", "Params (ours)", "Params (thesis)",
                  "ms (ours)", "ms (thesis)"]
        lines = [[r.label, iou(runs), r.thesis["iou"], params(runs), f"{r.thesis['params']}M", ms(runs),
                  r.thesis["ms"]] for r, runs, _ in rows]
    elif table == "5.4":
        header = ["Dataset", "Model", "Params (ours)", "Params (thesis)", "IoU_F (ours)", "IoU_F (thesis)",
                  "ms (ours)", "ms (thesis)"]
        lines = []
        for name, rows in results.items():
            for i, (r, runs, _) in enumerate(rows):
                where = f"{name} (thesis: {'Lucchi++' if r.group == 'lucchi' else 'Kasthuri++'})" if i == 0 else ""
                lines.append([where, r.label, params(runs), f"{r.thesis['params']}M", iou(runs), r.thesis["iou"],
                              ms(runs), r.thesis["ms"]])
    else:
        (name, rows), = results.items()
        header = ["Pretext task", "Modification function", "Pre-training test MSE (ours)", "IoU_F (ours)",
                  "IoU_F (thesis)"]
        base = [r["test_iou_f"] for r in rows[0][1]]
        lines = []
        for r, runs, pre in rows:
            vals = [x["test_iou_f"] for x in runs]
            delta = f"({np.mean(vals) - np.mean(base):+.3f}) " if r.pretrain and vals and base else ""
            lines.append([r.group if r.key == "baseline" or r.key == rows[1][0].key else "", r.label,
                          mean_std([x["test_mse"] for x in pre], 4) if r.pretrain else "",
                          delta + iou(runs), (f"({r.thesis['delta']}) " if r.thesis["delta"] else "") + r.thesis["iou"]])
        notes = ["In brackets: the difference of the means from the baseline row. Each seed pre-trains on its "
                 "pretext (MSE, no masks, §5.3) and fine-tunes from that run's best.pt."]
    every = [x for rows in results.values() for _, runs, pre in rows for x in runs + pre]
    if every:
        sides = {}
        for x in every:
            sides.setdefault(x["inference_patch"], set()).add(x["arch"])
        where = "; ".join(f"{s}x{s} ({', '.join(sorted(a))})" for s, a in sorted(sides.items()))
        notes.append(f"ours: {len(every)} run(s) on {', '.join(sorted({x['device'] for x in every}))}; inference "
                     f"ms per patch, batch 1: {where}. Thesis: 10 runs, 256x256 patches on an RTX 3090.")
        if table in ("5.2", "5.4") and any(x["inference_patch"] != 256 for x in every if x["arch"] in ("unetr2d", "ynetr2d")):
            notes.append("UNETR-2D/YNETR-2D parameters are counted at the trained tile side; the position "
                         "embedding grows with it (Table 5.2/5.4 count it at 256).")
    return markdown(header, lines), notes


def write_outputs(table, results, opts, argv):
    body, notes = format_table(table, results, opts)
    data = ("built-in synthetic EM data (--quick: tiny images, few epochs); not comparable with the thesis"
            if opts.quick else ", ".join(d for d in opts.data))
    text = "\n".join([f"# {TITLES[table]}", "", f"Command: `python reproduce.py {' '.join(argv)}`  ",
                      f"Data: {data}", "", body, ""] + [f"- {n}" for n in notes]) + "\n"
    print("\n" + text)
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, f"table_{table}.md"), "w") as f:
        f.write(text)
    strip = lambda r: {"seed": r.get("args", {}).get("seed"), "folder": r.get("args", {}).get("out"),  # noqa: E731
                       **{k: v for k, v in r.items() if k != "args"}}  # the folder's results.json has the args
    rows = [{"data": name, "key": r.key, "group": r.group, "label": r.label, "flags": r.flags,
             "thesis": r.thesis, "skipped": r.skip or None, "runs": [strip(x) for x in runs],
             "pretrain_runs": [strip(x) for x in pre]}
            for name, rs in results.items() for r, runs, pre in rs]
    with open(os.path.join(opts.out, f"table_{table}.json"), "w") as f:
        json.dump({"table": table, "title": TITLES[table], "command": ["python", "reproduce.py", *argv],
                   "quick": opts.quick, "repeats": opts.repeats, "data": opts.data, "rows": rows}, f, indent=2)
    return text


# ----------------------------------------------------------------------------------------------
# Command line.

# A1's flags in adapt.py's words: the data sets are its source and target; its synthetic preset needs none.
A1_FLAGS = {"--data": "--source", "--data2": "--target", "--quick": None}


def handover_a1(rest):
    """Table A.1 (domain adaptation) belongs to adapt.py: run `adapt.py --table` with the same flags."""
    if not os.path.isfile(ADAPT):
        print(f"error: Table A.1 is made by `python adapt.py --table`, and {ADAPT} is missing", file=sys.stderr)
        sys.exit(2)
    flags = [A1_FLAGS.get(a, a) for a in rest if A1_FLAGS.get(a, a)]
    sys.exit(subprocess.call([sys.executable, ADAPT, "--table", *flags]))


def parse_args(argv):
    p = argparse.ArgumentParser(description="Regenerate the thesis's tables: each cell trained by train.py, "
                                "printed beside the thesis's numbers.")
    p.add_argument("table", choices=[*TABLES, "A1"], help="5.1 ablation (U-Net, UNETR-2D Base); 5.2 initial "
                   "filters; 5.4 every network on two data sets; 5.5 denoising pretexts; A1 domain adaptation "
                   "(runs `python adapt.py --table`; --data/--data2 become --source/--target)")
    p.add_argument("--data", help="data set folder (train/x, train/y, test/x, test/y); thesis: Lucchi (5.1), "
                   "Lucchi++ (5.2, 5.4, 5.5)")
    p.add_argument("--data2", help="5.4: the second data set (thesis: Kasthuri++)")
    p.add_argument("--repeats", type=train.positive(int), help=f"seeds 0..N-1 per cell (thesis: {THESIS_REPEATS}; "
                   f"--quick: {QUICK_REPEATS})")
    p.add_argument("--epochs", type=train.positive(int), help="epochs per run (thesis: 360 with patience 60; "
                   f"--quick: {QUICK_EPOCHS})")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--out", help="folder of the cells and tables (default runs/reproduce, runs/reproduce-quick)")
    p.add_argument("--quick", action="store_true", help="the built-in synthetic data, small images, few epochs")
    p.add_argument("--rows", help="train only these rows, comma separated (e.g. unet,unetr2d-mini); the others "
                   "print as —")
    p.add_argument("--drop-last", action="store_true", help="delete the last.pt of each run this command finishes "
                   "(only needed to resume; saves disk on long tables)")
    opts = p.parse_args(argv)
    if opts.quick and (opts.data or opts.data2):
        raise ReproduceError("--quick trains on the built-in synthetic data; drop --data/--data2, or drop "
                             "--quick and shorten the protocol with --epochs")
    if not opts.quick and not opts.data:
        raise ReproduceError(f"table {opts.table} needs --data DIR (a Lucchi++-style folder), or --quick for the "
                             "built-in synthetic data")
    if opts.data2 and opts.table != "5.4":
        raise ReproduceError(f"--data2 is for table 5.4 only; table {opts.table} uses one data set")
    opts.data = [None] if opts.quick else [d for d in (opts.data, opts.data2) if d]
    for d in opts.data:
        if d and not os.path.isdir(d):
            raise ReproduceError(f"--data {d}: no such folder; it needs train/x, train/y, test/x, test/y")
    names = ["synthetic"] if opts.quick else [os.path.basename(os.path.normpath(d)).lower() for d in opts.data]
    opts.names = names if len(set(names)) == len(names) else [names[0], names[1] + "-2"]
    opts.repeats = opts.repeats or (QUICK_REPEATS if opts.quick else THESIS_REPEATS)
    opts.out = opts.out or os.path.join("runs", "reproduce-quick" if opts.quick else "reproduce")
    epochs = opts.epochs or (QUICK_EPOCHS if opts.quick else None)
    opts.train_flags = (QUICK if opts.quick else []) + (["--epochs", str(epochs)] if epochs else [])
    return opts


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["A1"]:
        handover_a1(argv[1:])
    return train.cli(run_command, argv)


def run_command(argv):
    opts = parse_args(argv)
    results = run_table(opts.table, opts)
    write_outputs(opts.table, results, opts, argv)
    return results


if __name__ == "__main__":
    main()
