"""Regenerate the thesis's result tables: every cell a training run, ours beside the thesis's numbers.

Thesis: §5.1.1 and Table 5.1 (incremental ablation, U-Net [34] vs UNETR-2D Base), Table 5.2 (initial
filters of UNETR-2D Base), §5.2 and Table 5.4 (every network on Lucchi++ and Kasthuri++), §3.3, §5.3
and Table 5.5 (denoising pretexts, then fine-tuning), App. A Table A.1 (adapt.table).

    python reproduce.py 5.4 --data LUCCHI --data2 KASTHURI    # the thesis protocol, 10 seeds per cell
    python reproduce.py 5.1 --quick                          # the same table on synthetic data, minutes
    python reproduce.py A1 --quick                           # Table A.1 on the built-in domains

Each table is its rows (what every row trains: settings for runs.make_config) and its layout, side by
side in `TABLES`. Every cell is one run folder, OUT/<table>/<data set>/<row>/seed-<k>, with seeds
0..N-1 for --repeats N: a finished folder is reused, a started one resumed, a new one trained
(runs.train_in), so an interrupted table goes on where it stopped and --repeats 10 after --repeats 3
trains seeds 3-9 only; a folder trained with other settings is refused, naming the difference. The
table is printed and written as OUT/table_<id>.md and OUT/table_<id>.json. Numbers are IoU_F mean ± std
over seeds (the per-slice mean of §4.2; std with ddof 0), parameters, and inference ms per patch.
"""
import os
from dataclasses import dataclass, field

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: idle CPU threads sleep, never spin
import numpy as np

import adapt
import cli
import models
import runs
import thesis_numbers as tn

THESIS_REPEATS, QUICK_REPEATS = 10, 1  # §5: every number is the mean ± std of 10 runs
DROPOUT = (0.1, 0.1, 0.2, 0.2, 0.3)  # §5.1.1 item 4, per level (bottleneck last)
TITLES = {"5.1": "Table 5.1: incremental ablation, U-Net vs UNETR-2D Base (thesis: Lucchi test set)",
          "5.2": "Table 5.2: initial filters of UNETR-2D Base (thesis: Lucchi++ test set)",
          "5.4": "Table 5.4: segmentation of every network (thesis: Lucchi++ and Kasthuri++)",
          "5.5": "Table 5.5: denoising pretexts before fine-tuning UNETR-2D Base (thesis: Lucchi++ test set)",
          "A1": "Table A.1: cross-data-set domain adaptation (thesis: App. A Table 1)"}


@dataclass
class Row:
    """One line of a table, trained once per seed. `pretrain`: the settings of the cell it starts from."""
    key: str           # --rows name, and the folder below the data set's
    group: str         # the data set (5.4) or the model column (5.1)
    label: str
    settings: dict     # runs.make_config settings of this row
    thesis: dict       # the thesis's numbers as printed: iou, params (millions), ms, delta
    pretrain: dict = None
    skip: str = ""     # why this row cannot be trained here
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


def rows_5_1(names):
    rows = []
    for arch, name, settings in ABLATION_MODELS:
        on = set()
        gates = models.accepts(arch, "attention_gates")
        for key, label, component in ABLATION:
            on = {c for c in on if c not in DISCARDED[arch]} | ({component} if component else set())
            mark = f" {MARKS[arch]}" if component in DISCARDED[arch] else ""
            skip = "" if component != "attention_gates" or gates else f"{arch} has no attention-gate option"
            rows.append(Row(f"{arch}/{key}", name, label + mark, {**settings, **ablation_settings(on)},
                            {"iou": tn.TABLE_5_1[arch][key]}, skip=skip))
    return {names[0]: rows}


def format_5_1(results):
    (_, rows), = results.items()
    by_key = {r.key: r for r in rows}
    header = ["Method"] + [f"{m} {w}" for _, m, _ in ABLATION_MODELS for w in ("(ours)", "(thesis)")]
    lines = []
    for key, label, component in ABLATION:
        line = [label + "".join(f" {MARKS[a]}" for a, _, _ in ABLATION_MODELS if component in DISCARDED[a])]
        for arch, _, _ in ABLATION_MODELS:
            row = by_key[f"{arch}/{key}"]
            line += ["n/a" if row.skip else iou(row.runs), row.thesis["iou"]]
        lines.append(line)
    notes = ["★ discarded on U-Net, ◆ discarded on UNETR-2D (§5.1.1): the rows below run without it."]
    return header, lines, notes + [f"n/a: {r.skip} (unetr2d.py)." for r in rows if r.skip]


# ----------------------------------------------------------------------------------------------
# Table 5.2: UNETR-2D Base by initial filters.

def rows_5_2(names):
    return {names[0]: [Row(f"filters-{f}", "", str(f), {"arch": "unetr2d", "size": "base", "filters": f},
                           {"iou": t["iou"], "params": t["params"], "ms": t["ms"]})
                       for f, t in tn.TABLE_5_2.items()]}


def format_5_2(results):
    (_, rows), = results.items()
    header = ["N initial filters", "IoU_F (ours)", "IoU_F (thesis)", "Params (ours)", "Params (thesis)",
              "ms (ours)", "ms (thesis)"]
    return header, [[r.label, iou(r.runs), r.thesis["iou"], params(r.runs), f"{r.thesis['params']}M",
                     ms(r.runs), r.thesis["ms"]] for r in rows], []


# ----------------------------------------------------------------------------------------------
# Table 5.4: every network on two data sets.

def rows_5_4(names):
    tables = {}
    for i, name in enumerate(names):
        # The thesis's data set for this one: named in the folder, else --data = Lucchi++,
        # --data2 = Kasthuri++.
        thesis = ("kasthuri" if "kasthuri" in name else "lucchi" if "lucchi" in name
                  else ("lucchi", "kasthuri")[i])
        rows = []
        for (arch, size), label in tn.LABELS_5_4.items():
            settings = {"arch": arch, "filters": models.ARCHS[arch]["filters"],
                        **({"size": size} if size else {})}
            if name == "synthetic" and arch == "attention_unet":
                # --quick trains with the demo's changes; keep the thesis's network
                settings["batch_norm"] = False
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
            lines.append([where, r.label, params(r.runs), f"{r.thesis['params']}M", iou(r.runs),
                          r.thesis["iou"], ms(r.runs), r.thesis["ms"]])
    return header, lines, []


# ----------------------------------------------------------------------------------------------
# Table 5.5: denoising pretexts (§3.3), then fine-tuning from the pretext's best weights.

def rows_5_5(names):
    base = {"arch": "unetr2d", "size": "base", "filters": 32}
    return {names[0]: [Row(pretext or "baseline", "Denoise" if pretext else "None", label, base,
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
        lines.append([r.group if k < 2 else "", r.label, mean_std([x["test_mse"] for x in r.pre_runs], 4)
                      if r.pretrain else "", delta + iou(r.runs),
                      (f"({r.thesis['delta']}) " if r.thesis["delta"] else "") + r.thesis["iou"]])
    return header, lines, ["In brackets: the difference of the means from the baseline row. Each seed "
                           "pre-trains on its pretext (MSE, no masks, §5.3) and fine-tunes from that run's "
                           "best.pt."]


TABLES = {"5.1": (rows_5_1, format_5_1), "5.2": (rows_5_2, format_5_2), "5.4": (rows_5_4, format_5_4),
          "5.5": (rows_5_5, format_5_5)}  # Table A.1's cells are adaptation runs: adapt.table


# ----------------------------------------------------------------------------------------------
# Cells and the numbers of a column.

def run_table(table, opts):
    """{data set: [Row with .runs (and .pre_runs) filled]} for the rows asked for, seed-major, so an
    interrupted table has whole seeds first."""
    plan = TABLES[table][0](opts.names)
    keys = [r.key for rows in plan.values() for r in rows]
    known = set(keys) | {k.split("/")[-1] for k in keys}  # 5.1: "unet/elu", or "elu" for both models
    wanted = set(opts.rows.split(",")) if opts.rows else None
    if wanted and wanted - known:
        raise cli.UsageError(f"--rows: unknown row {', '.join(sorted(wanted - known))}; table {table} has "
                             f"{', '.join(sorted(known))}")
    pick = lambda r: not r.skip and (wanted is None or r.key in wanted  # noqa: E731
                                     or r.key.split("/")[-1] in wanted)
    device = cli.pick_device(opts.device)
    for seed in range(opts.repeats):
        for (name, rows), data in zip(plan.items(), opts.data):
            for row in filter(pick, rows):
                cell = os.path.join(opts.out, table, name, *row.key.split("/"))
                settings = {**row.settings, "data": data, "seed": seed, "epochs": opts.epochs}
                if row.pretrain:  # §5.3: pre-train on the pretext, then fine-tune from its best weights
                    pre = os.path.join(f"{cell}-pretrain", f"seed-{seed}")
                    row.pre_runs.append(run_cell(pre, {**row.pretrain, "data": data, "seed": seed,
                                                       "epochs": opts.epochs}, opts, device))
                    settings["init_from"] = os.path.join(pre, "best.pt")
                row.runs.append(run_cell(os.path.join(cell, f"seed-{seed}"), settings, opts, device))
    return plan


def run_cell(folder, settings, opts, device):
    """results.json of one cell: the preset (quick or thesis) with the row's settings (runs.train_in)."""
    run = runs.make_config(preset="quick" if opts.quick else "thesis", device_type=device.type, **settings)
    return runs.train_in(folder, run, device, drop_last=opts.drop_last)


def mean_std(values, digits=3):
    if not values:
        return "—"
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.{digits}f}" + (f" ± {v.std():.{digits}f}" if len(v) > 1 else "")


def iou(results):
    return mean_std([r["test_iou_f"] for r in results])


def params(results):
    return f"{results[0]['params'] / 1e6:.3g}M" if results else "—"


def ms(results):
    if not results:
        return "—"
    return (f"{np.mean([r['inference_ms_per_patch'] for r in results]):.1f} ± "
            f"{np.mean([r['inference_ms_std'] for r in results]):.1f}")


def footnotes(table, results):
    """Which runs the numbers come from, and where our inference times differ from the thesis's."""
    every = [x for rows in results.values() for r in rows for x in r.runs + r.pre_runs]
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


def write_outputs(table, results, opts, argv):
    """The table as OUT/table_<id>.md (printed too) and every run's numbers as OUT/table_<id>.json."""
    header, lines, notes = TABLES[table][1](results)
    data = ("built-in synthetic EM data (--quick: tiny images, few epochs); not comparable with the thesis"
            if opts.quick else ", ".join(opts.data))
    body = markdown(header, lines)
    text = "\n".join([f"# {TITLES[table]}", "", f"Command: `python reproduce.py {' '.join(argv)}`  ",
                      f"Data: {data}", "", body, ""]
                     + [f"- {n}" for n in notes + footnotes(table, results)]) + "\n"
    print(body if opts.markdown else "\n" + text)
    os.makedirs(opts.out, exist_ok=True)
    with open(os.path.join(opts.out, f"table_{table}.md"), "w") as f:
        f.write(text)
    strip = lambda r: {"seed": r["run"]["fit"]["seed"], "folder": r["out"],  # noqa: E731
                       # the folder has the settings
                       **{k: v for k, v in r.items() if k not in ("run", "out")}}
    rows = [{"data": name, "key": r.key, "group": r.group, "label": r.label, "settings": r.settings,
             "thesis": r.thesis, "skipped": r.skip or None, "runs": [strip(x) for x in r.runs],
             "pretrain_runs": [strip(x) for x in r.pre_runs]} for name, rs in results.items() for r in rs]
    cli.write_json({"table": table, "title": TITLES[table], "command": ["python", "reproduce.py", *argv],
                    "quick": opts.quick, "repeats": opts.repeats, "data": opts.data, "rows": rows},
                   os.path.join(opts.out, f"table_{table}.json"))
    return text


# ----------------------------------------------------------------------------------------------
# Command line.

def parse_args(argv):
    p = cli.ArgumentParser(description="Regenerate the thesis's tables, each cell a training run, printed "
                           "beside the thesis's numbers.")
    p.add_argument("table", choices=[*TABLES, "A1"], help="5.1 ablation (U-Net, UNETR-2D Base); 5.2 initial "
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
                   "presets.LIGHT), minutes on a CPU")
    p.add_argument("--rows", help="train only these rows, comma separated (e.g. unet,unetr2d-mini); the "
                   "others print as —")
    p.add_argument("--drop-last", action="store_true", help="delete the last.pt of each run this command "
                   "finishes (only needed to resume; saves disk on long tables)")
    p.add_argument("--markdown", action="store_true", help="print only the markdown table (for docs/)")
    opts = p.parse_args(argv)
    if opts.quick and (opts.data or opts.data2):
        raise cli.UsageError("--quick trains on the built-in synthetic data; drop --data/--data2, or drop "
                             "--quick and shorten the protocol with --epochs")
    if not opts.quick and not opts.data:
        raise cli.UsageError(f"table {opts.table} needs --data DIR (a Lucchi++-style folder), or --quick for "
                             "the built-in synthetic data")
    if opts.data2 and opts.table not in ("5.4", "A1"):
        raise cli.UsageError(f"--data2 is for tables 5.4 and A1; table {opts.table} uses one data set")
    if opts.table == "A1" and opts.epochs:
        raise cli.UsageError("--epochs: Table A.1's runs keep their own epochs (App. A's stages, the "
                             "baselines' preset); shorten it with --quick")
    if opts.table == "A1" and opts.data and not opts.data2:
        raise cli.UsageError("table A1 needs two data sets: --data SOURCE --data2 TARGET (or --quick)")
    for d in (opts.data, opts.data2):
        if d and not os.path.isdir(d):
            raise cli.UsageError(f"--data {d}: no such folder; pass a data-set folder (python data.py DIR "
                                 "checks one)")
    opts.data = [None] if opts.quick else [d for d in (opts.data, opts.data2) if d]
    opts.names = data_names(opts.table, opts.quick, opts.data)
    opts.repeats = opts.repeats or (QUICK_REPEATS if opts.quick else THESIS_REPEATS)
    opts.out = opts.out or os.path.join("runs", "reproduce-quick" if opts.quick else "reproduce")
    return opts


def data_names(table, quick, data):
    """The folder (and column) name of each data set: synthetic, or the folders' names, made distinct."""
    if quick:
        return ["synthetic"]
    names = [os.path.basename(os.path.normpath(d)).lower() for d in data]
    return names if len(set(names)) == len(names) else [names[0], names[1] + "-2"]


def table_a1(opts):
    """Table A.1 through adapt.table: the light preset on the built-in domains (--quick), or --data and
    --data2 with the thesis's settings."""
    rows = opts.rows.split(",") if opts.rows else None
    unknown = sorted(set(rows or ()) - set(tn.TABLE_A1) | ({"damt_net"} & set(rows or ())))
    if unknown:
        raise cli.UsageError(f"--rows: no trainable row {', '.join(unknown)} in table A1; it has "
                             f"{', '.join(r for r in tn.TABLE_A1 if r != 'damt_net')}")
    source, target = (opts.data + [None, None])[:2]
    return adapt.table(adapt.TableOptions(source=source, target=target, out=os.path.join(opts.out, "A1"),
                                          repeats=opts.repeats, light=opts.quick, jobs=2 if opts.quick else 1,
                                          rows=tuple(rows) if rows else None, device=opts.device,
                                          drop_last=opts.drop_last))


def main(argv=None):
    return cli.main(run_command, argv)


def run_command(argv):
    opts = parse_args(argv)
    if opts.table == "A1":
        return table_a1(opts)
    results = run_table(opts.table, opts)
    write_outputs(opts.table, results, opts, argv)
    return results


if __name__ == "__main__":
    main()
