"""Regenerate the thesis's result tables: every cell a training run, ours beside the thesis's numbers.

Thesis: §5.1.1 and Table 5.1 (incremental ablation, U-Net [34] vs UNETR-2D Base), Table 5.2 (initial
filters of UNETR-2D Base), §5.2 and Table 5.4 (every network on Lucchi++ and Kasthuri++), §3.3, §5.3
and Table 5.5 (denoising pretexts, then fine-tuning), App. A Table A.1 (cross-data-set adaptation).

    python reproduce.py 5.4 --data LUCCHI --data2 KASTHURI    # the thesis protocol, 10 seeds per cell
    python reproduce.py 5.1 --quick                          # the same table on synthetic data, minutes
    python reproduce.py A1 --quick                           # Table A.1 on the built-in domains

Each table is its rows (what every row trains: settings for presets.make_config) and its layout, side
by side in `TABLES`. Every cell is one run folder, OUT/<table>/<group>/<row>/seed-<k> (a group is a data
set, or a direction of Table A.1), with seeds 0..N-1 for --repeats N: a finished folder is reused, a
started one resumed, a new one trained (runs.train_in; App. A's Y-Net through adapt.adapt), so an
interrupted table goes on where it stopped and --repeats 10 after --repeats 3 trains seeds 3-9 only; a
folder trained with other settings is refused, naming the difference. The table is printed and written
as OUT/table_<id>.md and OUT/table_<id>.json. Numbers are IoU_F mean ± std over seeds (the per-slice
mean of §4.2; std with ddof 0), parameters, and inference ms per patch.
"""
import concurrent.futures
import contextlib
import multiprocessing
import os
from dataclasses import dataclass, field, replace

import cli  # first: it sets OMP_WAIT_POLICY before torch loads OpenMP
import numpy as np

import adapt
import models
import predict
import presets
import runs
import synthetic
import thesis_numbers as tn

THESIS_REPEATS, QUICK_REPEATS = 10, 1  # §5: every number is the mean ± std of 10 runs
DROPOUT = (0.1, 0.1, 0.2, 0.2, 0.3)  # §5.1.1 item 4, per level (bottleneck last)
TITLES = {"5.1": "Table 5.1: incremental ablation, U-Net vs UNETR-2D Base (thesis: Lucchi test set)",
          "5.2": "Table 5.2: initial filters of UNETR-2D Base (thesis: Lucchi++ test set)",
          "5.4": "Table 5.4: segmentation of every network (thesis: Lucchi++ and Kasthuri++)",
          "5.5": "Table 5.5: denoising pretexts before fine-tuning UNETR-2D Base (thesis: Lucchi++ test set)",
          "A1": "Table A.1: IoU_F on the target's test set, trained on the source (thesis: App. A Table 1)"}


@dataclass(frozen=True)
class Request:
    """What one reproduce.py command asks for, made once by parse_args."""
    table: str
    data: tuple               # the data-set folders, or (None,) for --quick's built-in data
    names: tuple              # each data set's name: its folder's, or "synthetic" (A1: "a", "b")
    repeats: int              # seeds 0 .. repeats - 1 per cell
    epochs: int = None        # None: the preset's
    quick: bool = False
    light: bool = False       # A1: the light presets (presets.LIGHT, ADAPT_LIGHT); with --quick always
    rows: tuple = None        # the rows to train (None: all)
    out: str = os.path.join("runs", "reproduce")
    device: str = "auto"
    drop_last: bool = False
    jobs: int = 1             # groups (data sets, directions) trained side by side, one process each
    markdown: bool = False


@dataclass
class Row:
    """One line of a table, trained once per seed. `pretrain`: the settings of the cell it starts from."""
    key: str           # --rows name, and the folder below the group's
    group: str         # the data set (5.4), the model column (5.1) or the direction (A1)
    label: str
    settings: dict     # presets.make_config settings of this row (adapt.adapt_config's for kind "adapt")
    thesis: dict       # the thesis's numbers as printed: iou, params (millions), ms, delta
    pretrain: dict = None
    skip: str = ""     # why this row cannot be trained here
    preset: str = None  # None: quick with --quick, else thesis
    kind: str = "train"  # train: a train.py run; adapt: App. A's three-stage Attention Y-Net
    score_on: str = None  # a data set whose test split scores the cell (Table A.1's target)
    runs: list = field(default_factory=list)      # results.json of each seed, filled by run_table
    pre_runs: list = field(default_factory=list)  # the pre-training cells' (Table 5.5)


# ----------------------------------------------------------------------------------------------
# Table 5.1: rows in the thesis's order, each adding one §5.1.1 component.

ABLATION = [("baseline", "Baseline", None), ("da", "+ DA", "augment"),
            ("batch-norm", "+ Batch norm.", "batch_norm"), ("dropout", "+ Dropout", "dropout"),
            ("elu", "+ ELU", "elu"), ("he-normal", "+ He normal", "he_normal"),
            ("attention-gates", "+ Attention Gates", "attention_gates")]
# Table 5.1's marks (★ U-Net, ◆ UNETR-2D) and §5.1.1: a component that impaired the result was
# discarded from the rows below it; every other component stays once added.
DISCARDED = {"unet": {"batch_norm"}, "unetr2d": {"dropout", "elu", "attention_gates"}}
MARKS = {"unet": "★", "unetr2d": "◆"}
ABLATION_MODELS = [("unet", "U-Net [34]", {"arch": "unet", "filters": 16}),
                   ("unetr2d", "UNETR-2D Base", {"arch": "unetr2d", "size": "base", "filters": 16})]


def ablation_settings(on):
    """The model and data settings for the set of §5.1.1 components switched on (the rest at the
    baseline)."""
    return {"augment": "augment" in on, "batch_norm": "batch_norm" in on,
            "dropout": DROPOUT if "dropout" in on else 0.0, "activation": "elu" if "elu" in on else "relu",
            "init": "he_normal" if "he_normal" in on else "glorot_uniform",
            **({"attention_gates": True} if "attention_gates" in on else {})}


def rows_5_1(request):
    rows = []
    for arch, name, settings in ABLATION_MODELS:
        on = set()
        gates = "attention_gates" in models.ARCHS[arch]["knobs"]
        for key, label, component in ABLATION:
            on = {c for c in on if c not in DISCARDED[arch]} | ({component} if component else set())
            mark = f" {MARKS[arch]}" if component in DISCARDED[arch] else ""
            skip = "" if component != "attention_gates" or gates else f"{arch} has no attention-gate option"
            rows.append(Row(f"{arch}/{key}", name, label + mark,
                            {**settings, **ablation_settings(on), "data": request.data[0]},
                            {"iou": tn.TABLE_5_1[arch][key]}, skip=skip))
    return {request.names[0]: rows}


def format_5_1(results):
    (_, rows), = results.items()
    by_key = {r.key: r for r in rows}
    header = ["Method"] + [f"{m} {w}" for _, m, _ in ABLATION_MODELS for w in ("(ours)", "(thesis)")]
    lines = []
    for key, label, component in ABLATION:
        line = [label + "".join(f" {MARKS[a]}" for a, _, _ in ABLATION_MODELS if component in DISCARDED[a])]
        for arch, _, _ in ABLATION_MODELS:
            row = by_key[f"{arch}/{key}"]
            line += ["n/a" if row.skip else iou_cell(row.runs), row.thesis["iou"]]
        lines.append(line)
    notes = ["★ discarded on U-Net, ◆ discarded on UNETR-2D (§5.1.1): the rows below run without it."]
    return header, lines, notes + [f"n/a: {r.skip} (unetr2d.py)." for r in rows if r.skip]


# ----------------------------------------------------------------------------------------------
# Table 5.2: UNETR-2D Base by initial filters.

def rows_5_2(request):
    base = {"arch": "unetr2d", "size": "base", "data": request.data[0]}
    return {request.names[0]: [Row(f"filters-{f}", "", str(f), {**base, "filters": f},
                                   {"iou": t["iou"], "params": t["params"], "ms": t["ms"]})
                               for f, t in tn.TABLE_5_2.items()]}


def format_5_2(results):
    (_, rows), = results.items()
    header = ["N initial filters", "IoU_F (ours)", "IoU_F (thesis)", "Params (ours)", "Params (thesis)",
              "ms (ours)", "ms (thesis)"]
    return header, [[r.label, iou_cell(r.runs), r.thesis["iou"], params_cell(r.runs),
                     f"{r.thesis['params']}M", ms_cell(r.runs), r.thesis["ms"]] for r in rows], []


# ----------------------------------------------------------------------------------------------
# Table 5.4: every network on two data sets.

def rows_5_4(request):
    tables = {}
    for i, (name, folder) in enumerate(zip(request.names, request.data)):
        # The thesis's data set for this one: named in the folder, else --data = Lucchi++,
        # --data2 = Kasthuri++.
        thesis = ("kasthuri" if "kasthuri" in name else "lucchi" if "lucchi" in name
                  else ("lucchi", "kasthuri")[i])
        rows = []
        for (arch, size), label in tn.LABELS_5_4.items():
            settings = {"arch": arch, "filters": models.ARCHS[arch]["filters"], "data": folder,
                        **({"size": size} if size else {})}
            iou_f, ms_f = tn.TABLE_5_4[thesis][(arch, size)]
            rows.append(Row(arch.replace("_", "-") + (f"-{size}" if size else ""), thesis, label, settings,
                            {"iou": iou_f, "params": tn.PARAMS_5_4[(arch, size)], "ms": ms_f}))
        tables[name] = rows
    return tables


def format_5_4(results):
    header = ["Dataset", "Model", "Params (ours)", "Params (thesis)", "IoU_F (ours)", "IoU_F (thesis)",
              "ms (ours)", "ms (thesis)"]
    lines = []
    for name, rows in results.items():
        for i, r in enumerate(rows):
            where = f"{name} (thesis: {tn.DATASETS_5_4[r.group]})" if i == 0 else ""
            lines.append([where, r.label, params_cell(r.runs), f"{r.thesis['params']}M", iou_cell(r.runs),
                          r.thesis["iou"], ms_cell(r.runs), r.thesis["ms"]])
    return header, lines, []


# ----------------------------------------------------------------------------------------------
# Table 5.5: denoising pretexts (§3.3), then fine-tuning from the pretext's best weights.

def rows_5_5(request):
    base = {"arch": "unetr2d", "size": "base", "filters": 32, "data": request.data[0]}
    return {request.names[0]: [Row(pretext or "baseline", "Denoise" if pretext else "None", label, base,
                           {"iou": iou_f, "delta": delta},
                           pretrain={**base, "pretext": pretext} if pretext else None)
                       for pretext, label, delta, iou_f in tn.TABLE_5_5]}


def format_5_5(results):
    (_, rows), = results.items()
    header = ["Pretext task", "Modification function", "Pre-training test MSE (ours)", "IoU_F (ours)",
              "IoU_F (thesis)"]
    base = [r["test_iou_f"] for r in rows[0].runs]
    lines = []
    for k, r in enumerate(rows):
        values = [x["test_iou_f"] for x in r.runs]
        delta = f"({np.mean(values) - np.mean(base):+.3f}) " if r.pretrain and values and base else ""
        lines.append([r.group if k < 2 else "", r.label, cli.mean_std([x["test_mse"] for x in r.pre_runs], 4)
                      if r.pretrain else "", delta + iou_cell(r.runs),
                      (f"({r.thesis['delta']}) " if r.thesis["delta"] else "") + r.thesis["iou"]])
    return header, lines, ["In brackets: the difference of the means from the baseline row. Each seed "
                           "pre-trains on its pretext (MSE, no masks, §5.3) and fine-tunes from that run's "
                           "best.pt."]


# ----------------------------------------------------------------------------------------------
# Table A.1: both directions between two data sets, every cell trained on the source and scored on the
# target's test split; its last row is App. A's method (adapt.py).

A1_BASELINES = {"unetr2d_base": {"arch": "unetr2d", "size": "base"},
                "attention_unet": {"arch": "attention_unet"},
                "attention_unet_clahe": {"arch": "attention_unet", "preprocess": "clahe"},
                "attention_unet_hm": {"arch": "attention_unet", "preprocess": "hist_match"}}


def rows_A1(request):
    """Both directions (source -> target) of Table A.1; --quick: the light presets on the built-in domains."""
    (a, b), (name_a, name_b), light = request.data, request.names, request.light
    groups = {}
    for d, (source, target, names) in enumerate(((a, b, (name_a, name_b)), (b, a, (name_b, name_a)))):
        rows = []
        for key, (label, *thesis) in tn.TABLE_A1.items():
            row = Row(key, "{} -> {}".format(*names), label, {}, {"iou": thesis[d]}, score_on=target,
                      preset="light" if light else "thesis")
            if key == "attention_ynet_hm":
                row.kind, row.settings = "adapt", {"source": source, "target": target}
            elif key in A1_BASELINES:
                row.settings = {**A1_BASELINES[key], "data": source}
                if row.settings.get("preprocess") == "hist_match":
                    row.settings["match_to"] = target
                if light and key == "unetr2d_base":  # Base costs ~50x Mini per step at this size
                    row.settings["size"], row.label = "mini", label + " (ours: Mini, light preset)"
            else:
                row.skip = "not reimplemented here"
            rows.append(row)
        groups["{}-to-{}".format(*names)] = rows
    return groups


def format_A1(results):
    (ab, rows_ab), (ba, rows_ba) = results.items()
    header = ["Method", "IoU_F (thesis, Lucchi++ -> Kasthuri++)", "IoU_F (thesis, Kasthuri++ -> Lucchi++)",
              f"IoU_F (ours, {rows_ab[0].group})", f"IoU_F (ours, {rows_ba[0].group})"]
    ours = lambda r: "n/a" if r.skip else cli.mean_std([x["target_iou_f"] for x in r.runs])  # noqa: E731
    lines = [[r.label, r.thesis["iou"], s.thesis["iou"], ours(r), ours(s)] for r, s in zip(rows_ab, rows_ba)]
    return header, lines, ["Every cell is trained on its source and scored on its target's test split "
                           "(App. A); the Attention Y-Net also sees the target's training images, "
                           "unlabelled."]


TABLES = {"5.1": (rows_5_1, format_5_1), "5.2": (rows_5_2, format_5_2), "5.4": (rows_5_4, format_5_4),
          "5.5": (rows_5_5, format_5_5), "A1": (rows_A1, format_A1)}


# ----------------------------------------------------------------------------------------------
# Cells and the numbers of a column.

def run_table(request, only=None):
    """{group: [Row with .runs (and .pre_runs) filled]} for the rows asked for, seed-major, so an
    interrupted table has whole seeds first. only: train that group alone (a process of --jobs 2)."""
    plan = TABLES[request.table][0](request)
    keys = [r.key for rows in plan.values() for r in rows]
    known = set(keys) | {k.split("/")[-1] for k in keys}  # 5.1: "unet/elu", or "elu" for both models
    wanted = None if request.rows is None else set(request.rows)
    untrainable = {r.key for rows in plan.values() for r in rows if r.skip} & (wanted or set())
    if wanted and (wanted - known or untrainable):
        raise cli.UsageError(f"--rows: no trainable row {', '.join(sorted((wanted - known) | untrainable))}"
                             f"; table {request.table} has {', '.join(sorted(known))}")
    pick = lambda r: not r.skip and (wanted is None or r.key in wanted  # noqa: E731
                                     or r.key.split("/")[-1] in wanted)
    if request.jobs > 1 and only is None and len(plan) > 1:
        run_groups_apart(request, list(plan))
    device = cli.pick_device(request.device)
    for seed in range(request.repeats):
        for name, rows in plan.items():
            for row in filter(pick, rows if only in (None, name) else []):
                cell = os.path.join(request.out, request.table, name, *row.key.split("/"))
                if row.pretrain:  # §5.3: pre-train on the pretext, then fine-tune from its best weights
                    pre = os.path.join(f"{cell}-pretrain", f"seed-{seed}")
                    row.pre_runs.append(run_cell(pre, replace(row, settings=row.pretrain), seed, request,
                                                 device))
                    row = replace(row, settings={**row.settings, "init_from": os.path.join(pre, "best.pt")})
                row.runs.append(run_cell(os.path.join(cell, f"seed-{seed}"), row, seed, request, device))
    return plan


def run_cell(folder, row, seed, request, device):
    """results.json of one cell (runs.train_in), or of App. A's three stages (adapt.adapt); with
    row.score_on, its IoU_F on that data set's test split too (target_iou_f, kept in target.json)."""
    if row.kind == "adapt":
        cfg = adapt.adapt_config(light=request.light, seed=seed, **row.settings)
        adapted = lambda: adapt.adapt(cfg, device, folder, resume=os.path.isdir(folder))  # noqa: E731
        return {"seed": seed, "out": folder, **target_score(folder, row, lambda: adapted()["test_iou_f"])}
    settings = {**row.settings, "seed": seed, "epochs": request.epochs}
    run = presets.make_config(preset=row.preset or ("quick" if request.quick else "thesis"),
                              device_type=device.type, **settings)
    results = runs.train_in(folder, run, device, drop_last=request.drop_last)
    if row.score_on:
        scored = lambda: predict.score_checkpoint(os.path.join(folder, "best.pt"), row.score_on,  # noqa: E731
                                                  device)["test_iou_f"]
        results.update(target_score(folder, row, scored))
    return results


def target_score(folder, row, score):
    """{"target_iou_f": ...} of a cell: read from folder/target.json once the cell is done, else score()
    and keep it there."""
    path = os.path.join(folder, "target.json")
    if not os.path.isfile(path):
        cli.write_json({"test_iou_f": score(), "target": row.score_on}, path)
    return {"target_iou_f": cli.read_json(path)["test_iou_f"]}


def group_in_child(request, group, log):
    """One group of a table in a process of its own, its output in `log`; True when it finished."""
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        try:
            run_table(request, only=group)
            return True
        except cli.UsageError as exc:
            print(f"error: {exc}")
            return False


def process_pool(jobs):
    """`jobs` spawned worker processes: a fresh interpreter each, which sets its torch threads per cell."""
    return concurrent.futures.ProcessPoolExecutor(max_workers=jobs,
                                                  mp_context=multiprocessing.get_context("spawn"))


def run_groups_apart(request, groups):
    """Two groups at once, one spawned process each (a fresh interpreter; each cell sets its own threads),
    their cells written under request.out, where the table then finds them finished."""
    os.makedirs(request.out, exist_ok=True)
    logs = [os.path.join(request.out, f"{request.table}-{g}.log") for g in groups]
    print(f"{len(groups)} groups at once, one process each; progress in {', '.join(logs)}")
    with process_pool(request.jobs) as pool:
        finished = [f.result() for f in [pool.submit(group_in_child, request, g, log)
                                         for g, log in zip(groups, logs)]]
    failed = [log for log, ok in zip(logs, finished) if not ok]
    if failed:
        raise cli.UsageError(f"a group of the table failed; see {' and '.join(failed)}")


def iou_cell(results):
    return cli.mean_std([r["test_iou_f"] for r in results])


def params_cell(results):
    return f"{results[0]['params'] / 1e6:.3g}M" if results else "—"


def ms_cell(results):
    if not results:
        return "—"
    return (f"{np.mean([r['inference_ms_per_patch'] for r in results]):.1f} ± "
            f"{np.mean([r['inference_ms_std'] for r in results]):.1f}")


def footnotes(table, results):
    """Which runs the numbers come from, and where our inference times differ from the thesis's."""
    every = [x for rows in results.values() for r in rows for x in r.runs + r.pre_runs if "device" in x]
    if not every:
        return []
    sides = {}
    for x in every:
        sides.setdefault(x["inference_patch"], set()).add(x["arch"])
    where = "; ".join(f"{s}x{s} ({', '.join(sorted(a))})" for s, a in sorted(sides.items()))
    notes = [f"ours: {len(every)} run(s) on {', '.join(sorted({x['device'] for x in every}))}; inference ms "
             f"per patch, batch 1: {where}. Thesis: 10 runs, 256x256 patches on an RTX 3090."]
    if table in ("5.2", "5.4") and any(x["inference_patch"] != 256 for x in every
                                       if models.ARCHS[x["arch"]]["sized"]):
        notes.append("UNETR-2D/YNETR-2D parameters are counted at the trained tile side; the position "
                     "embedding grows with it (Table 5.2/5.4 count it at 256).")
    return notes


def markdown(header, lines):
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                     + ["| " + " | ".join(line) + " |" for line in lines])


def write_outputs(request, results, argv):
    """The table as OUT/table_<id>.md (printed too) and every run's numbers as OUT/table_<id>.json."""
    table = request.table
    header, lines, notes = TABLES[table][1](results)
    data = ("built-in synthetic EM data (--quick: tiny images, few epochs); not comparable with the thesis"
            if request.quick and table != "A1" else ", ".join(request.data))
    body = markdown(header, lines)
    text = "\n".join([f"# {TITLES[table]}", "", f"Command: `python reproduce.py {' '.join(argv)}`  ",
                      f"Data: {data}", "", body, ""]
                     + [f"- {n}" for n in notes + footnotes(table, results)]) + "\n"
    print(body if request.markdown else "\n" + text)
    os.makedirs(request.out, exist_ok=True)
    with open(os.path.join(request.out, f"table_{table}.md"), "w") as f:
        f.write(text)
    strip = lambda r: {"seed": r["run"]["fit"]["seed"] if "run" in r else r["seed"],  # noqa: E731
                       "folder": r["out"], **{k: v for k, v in r.items() if k not in ("run", "out")}}
    rows = [{"data": name, "key": r.key, "group": r.group, "label": r.label, "settings": r.settings,
             "thesis": r.thesis, "skipped": r.skip or None, "runs": [strip(x) for x in r.runs],
             "pretrain_runs": [strip(x) for x in r.pre_runs]} for name, rs in results.items() for r in rs]
    cli.write_json({"table": table, "title": TITLES[table], "command": ["python", "reproduce.py", *argv],
                    "quick": request.quick, "repeats": request.repeats, "data": request.data, "rows": rows},
                   os.path.join(request.out, f"table_{table}.json"))
    return text


# ----------------------------------------------------------------------------------------------
# Command line.

def parse_args(argv):
    p = cli.ArgumentParser(description="Regenerate the thesis's tables, each cell a training run, printed "
                           "beside the thesis's numbers.")
    p.add_argument("table", choices=list(TABLES), help="5.1 ablation (U-Net, UNETR-2D Base); 5.2 initial "
                   "filters; 5.4 every network on two data sets; 5.5 denoising pretexts; A1 domain "
                   "adaptation")
    p.add_argument("--data", help="data-set folder (either layout, python data.py DIR checks it); thesis: "
                   "Lucchi (5.1), Lucchi++ (5.2, 5.4, 5.5); A1: the source of the first direction")
    p.add_argument("--data2", help="5.4: the second data set (thesis: Kasthuri++); A1: the other data set")
    p.add_argument("--repeats", type=cli.at_least(int), help="seeds 0..N-1 per cell "
                   f"(thesis: {THESIS_REPEATS}; --quick: {QUICK_REPEATS})")
    p.add_argument("--epochs", type=cli.at_least(int), help="epochs per run (thesis: 360 with patience 60; "
                   "--quick: presets.QUICK's); not for A1, whose stages and baselines have their own")
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    p.add_argument("--out", help="folder of the cells and tables (default runs/reproduce, "
                   "runs/reproduce-quick)")
    p.add_argument("--quick", action="store_true", help="the built-in synthetic data and presets.QUICK (A1: "
                   "presets.LIGHT and ADAPT_LIGHT on the built-in domains a and b), minutes on a CPU")
    p.add_argument("--light", action="store_true", help="A1 on your folders with the light presets of A1 "
                   "--quick (presets.LIGHT, ADAPT_LIGHT): a CPU budget")
    p.add_argument("--rows", help="train only these rows, comma separated (e.g. unet,unetr2d-mini); the "
                   "others print as —")
    p.add_argument("--jobs", type=int, choices=[1, 2], help="the two data sets (5.4) or directions (A1) one "
                   "after the other (1) or side by side in two processes (2; the default of A1 --quick)")
    p.add_argument("--drop-last", action="store_true", help="delete the last.pt of each run this command "
                   "finishes (only needed to resume; saves disk on long tables)")
    p.add_argument("--markdown", action="store_true", help="print only the markdown table (for docs/)")
    args = p.parse_args(argv)
    refuse_bad_arguments(args)
    data = (None,) if args.quick else tuple(d for d in (args.data, args.data2) if d)
    if args.table == "A1" and args.quick:
        data = (os.path.join(args.out or QUICK_OUT, "A1", "data", "a"),
                os.path.join(args.out or QUICK_OUT, "A1", "data", "b"))
    return Request(table=args.table, data=data, names=data_names(args.table, args.quick, data),
                   repeats=args.repeats or (QUICK_REPEATS if args.quick else THESIS_REPEATS),
                   epochs=args.epochs, quick=args.quick, light=args.quick or args.light,
                   rows=tuple(args.rows.split(",")) if args.rows else None,
                   out=args.out or (QUICK_OUT if args.quick else os.path.join("runs", "reproduce")),
                   device=args.device, drop_last=args.drop_last,
                   jobs=args.jobs or (2 if args.table == "A1" and (args.quick or args.light) else 1),
                   markdown=args.markdown)


QUICK_OUT = os.path.join("runs", "reproduce-quick")


def refuse_bad_arguments(args):
    """One line, exit 2, for flags that do not fit the table."""
    if args.quick and (args.data or args.data2):
        raise cli.UsageError("--quick trains on the built-in synthetic data; drop --data/--data2, or drop "
                             "--quick and shorten the protocol with --epochs")
    if not args.quick and not args.data:
        raise cli.UsageError(f"table {args.table} needs --data DIR (a Lucchi++-style folder), or --quick for "
                             "the built-in synthetic data")
    if args.data2 and args.table not in ("5.4", "A1"):
        raise cli.UsageError(f"--data2 is for tables 5.4 and A1; table {args.table} uses one data set")
    if args.table == "A1" and args.epochs:
        raise cli.UsageError("--epochs: Table A.1's runs keep their own epochs (App. A's stages, the "
                             "baselines' preset); shorten it with --quick")
    if args.light and args.table != "A1":
        raise cli.UsageError(f"--light is for table A1; table {args.table} has --quick")
    if args.table == "A1" and args.data and not args.data2:
        raise cli.UsageError("table A1 needs two data sets: --data SOURCE --data2 TARGET (or --quick)")
    for d in (args.data, args.data2):
        if d and not os.path.isdir(d):
            raise cli.UsageError(f"--data {d}: no such folder; pass a data-set folder (python data.py DIR "
                                 "checks one)")


def data_names(table, quick, data):
    """The folder (and column) name of each data set: synthetic, the built-in domains a and b, or the
    folders' names, made distinct."""
    if quick and table != "A1":
        return ("synthetic",)
    names = [os.path.basename(os.path.normpath(d)).lower() for d in data]
    return tuple(names if len(set(names)) == len(names) else [names[0], names[1] + "-2"])


def builtin_domains(request):
    """Table A.1 --quick: the built-in domains "a" and "b" (presets.LIGHT's sizes) written once, before any
    process of --jobs 2 starts."""
    light = presets.LIGHT
    for folder, domain, seed in zip(request.data, ("a", "b"), (31, 32)):
        synthetic.write_dataset(folder, light["train_images"], light["test_images"], light["image_side"],
                                seed, domain=domain)


def main(argv=None):
    return cli.main(run_command, argv)


def run_command(argv):
    request = parse_args(argv)
    if request.table == "A1" and request.quick:
        builtin_domains(request)
    results = run_table(request)
    write_outputs(request, results, argv)
    return results


if __name__ == "__main__":
    main()
