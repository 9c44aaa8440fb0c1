"""Training runs on disk: a run's settings, its folder, --resume, repeated seeds and the final report.

Thesis: §4.3.2 (the protocol a preset starts from), §5 (every number the mean ± std of repeated runs),
Table 5.4 (the thesis's IoU_F printed beside ours).

This is train.py's command line and what reproduce.py and adapt.py drive training runs through. A run's
settings are one frozen `RunConfig` (holding the loop's `train.FitConfig`), made by `make_config` from a
preset of presets.py (thesis with --data, demo without) and the settings asked for, and refused there,
before anything is written, when they do not fit together. A run folder holds run.json (the RunConfig),
last.pt and best.pt (which carry it too), log.csv, curves.png, prediction overlays and results.json;
`--resume` continues it from last.pt with its own settings, and `train_in` reuses a finished folder,
resumes a started one and trains a new one (the cells of reproduce.py's tables).
"""
import os
import sys
import time
from dataclasses import asdict, dataclass, fields, replace

import numpy as np
import torch

import cli
import data
import degrade
import distributed
import evaluate
import models
import presets
import synthetic
import thesis_numbers
import train


@dataclass(frozen=True)
class RunConfig:
    """One training run: the network, its data and the loop (train.FitConfig). Kept as run.json and in
    every checkpoint, so that --resume and predict.py rebuild the run from its folder alone."""
    arch: str
    size: str                  # Table 5.3, for UNETR-2D / YNETR-2D
    filters: int               # F
    fit: train.FitConfig
    data: str = None           # a data-set folder; None: the built-in synthetic set (synthetic.py)
    tile: int = 256            # training tile and transformer input side (§4.3.1)
    augment: bool = True       # §4.3.2 rotations and flips
    rotation: str = "any"      # data.ROTATIONS
    sampling: str = "tiles"    # tiles: the fixed grid (§4.3.1); crops: a fresh window per sample and epoch
    val_fraction: float = 0.1  # §4.3.2
    preprocess: str = "none"   # App. A baselines: clahe | hist_match (to match_to's mean histogram)
    match_to: str = None
    target_hist: tuple = None  # that histogram, 256 floats, so prediction matches new slices the same way
    pretext: tuple = ()        # degradation names of a denoising pretext (§3.3)
    init_from: str = None      # a checkpoint whose matching tensors start the run (§3.3)
    batch_norm: bool = None    # model knobs (None: the arch's thesis best, Table 5.1 / App. B)
    dropout: object = None     # one rate, or one per level incl. the bottleneck
    activation: str = None
    init: str = None           # glorot_uniform | he_normal
    attention_gates: bool = None
    fused_attention: bool = None
    bn_momentum: float = 0.01  # torch convention: 0.01 is the thesis code's Keras 0.99
    channels_last: bool = False
    threads: int = None        # CPU threads for torch's operators
    train_images: int = 48     # the synthetic set (without --data)
    test_images: int = 8
    image_side: int = 256
    repeats: int = 1           # seeds seed .. seed + repeats - 1
    preset: str = "thesis"

    @property
    def model_kwargs(self):
        knobs = ("batch_norm", "dropout", "activation", "init", "attention_gates", "fused_attention")
        return models.model_kwargs(self.arch, self.tile, **{k: getattr(self, k) for k in knobs})

    @classmethod
    def from_dict(cls, saved):
        """The RunConfig of a run.json or a checkpoint's "run" (JSON gives lists where tuples were)."""
        tuples = {k: tuple(v) for k, v in saved.items() if isinstance(v, list)}
        return cls(**{**saved, **tuples, "fit": train.FitConfig(**saved["fit"])})


# Settings that only say how to run (train.py's flags), not what a run is.
PROGRAM = ("out", "resume", "eval_only", "summary", "device", "preset")
MACHINE = ("device", "workers", "threads", "progress")  # what --resume may change


def make_config(arch="unetr2d", preset=None, device_type="cpu", **given):
    """The RunConfig of a new run: preset `preset` (thesis with `data`, demo without) for `arch`, then
    every setting in `given` (train.py's flag names; None: the preset's), then what depends on the
    machine. Settings that do not fit together are refused (a UsageError naming the flag) up front."""
    preset = preset or ("thesis" if given.get("data") else "demo")
    unknown = set(given) - {f.name for f in fields(RunConfig) + fields(train.FitConfig)}
    if unknown:
        raise TypeError(f"make_config: no setting called {', '.join(sorted(unknown))}")
    given = {k: v for k, v in given.items() if v is not None}
    s = {**presets.for_arch(preset, arch), "seed": 0, "amp": False, "compile": False, "progress": False,
         "preprocess": "none", "size": "mini", **given, "arch": arch, "preset": preset}
    s["filters"] = s["filters"] or models.ARCHS[arch]["filters"]
    s.setdefault("workers", 4 if device_type == "cuda" else 0)
    names = s.get("pretext") or ()
    s["pretext"] = tuple(n.strip() for n in names.split(",")) if isinstance(names, str) else tuple(names)
    if isinstance(s.get("dropout"), (list, tuple)):
        s["dropout"] = s["dropout"][0] if len(s["dropout"]) == 1 else tuple(s["dropout"])
    s["fit"] = train.FitConfig(**{f.name: s[f.name] for f in fields(train.FitConfig) if f.name in s and
                                  f.name != "pretext"}, pretext=bool(s["pretext"]))
    check(s)
    # App. A: the target's mean histogram, kept in checkpoints
    if s.get("match_to") and s.get("target_hist") is None:
        x = data.load_split(s["match_to"], "train", masks=False)[0]
        s["target_hist"] = tuple(float(v) for v in degrade.mean_histogram(x))
    run = RunConfig(**{f.name: s[f.name] for f in fields(RunConfig) if f.name in s})
    # the network built on the meta device (no memory, no time): knobs that do not fit it are refused now
    try:
        with torch.device("meta"):
            models.build_model(run.arch, run.size, run.filters, **run.model_kwargs)
    except ValueError as exc:  # e.g. a dropout list of the wrong length
        raise cli.UsageError(f"model settings: {exc}") from None
    return run


def check(s):
    """Refuse settings that cannot run together, naming the flags."""
    unknown = [n for n in s["pretext"] if n not in degrade.DEGRADATIONS]
    if unknown:
        raise cli.UsageError(f"--pretext: unknown degradation {', '.join(unknown)}; choose from "
                             f"{', '.join(degrade.DEGRADATIONS)}")
    if s["tile"] % 16:
        raise cli.UsageError(f"--tile {s['tile']}: must be a multiple of 16 (the patch size, §2.2.5)")
    if (s["preprocess"] == "hist_match") != bool(s.get("match_to")):
        raise cli.UsageError("--preprocess hist_match and --match-to DIR go together: name the target data "
                             "set whose mean histogram the images are matched to")
    if s["fit"].scheduler == "plateau" and s["val_fraction"] == 0:
        raise cli.UsageError("--val-fraction 0 leaves no validation loss for --scheduler plateau; use "
                             "cosine, onecycle or none, or hold out a validation set")
    if s.get("init_from"):  # a file that is no checkpoint (or holds code) is refused before any folder exists
        models.load_checkpoint(s["init_from"], "--init-from", keys=("model",))


def resumed_config(out, argv, machine):
    """--resume: the run's own settings from OUT/run.json; only the machine's (MACHINE) may change."""
    path = os.path.join(out or "", "run.json")
    if not out or not os.path.isfile(path):
        raise cli.UsageError(f"--resume: {path} does not exist; name the folder of an earlier run with --out")
    ignored = sorted({a.split("=")[0] for a in argv if a.startswith("--")} - {"--out", "--resume"}
                     - {f"--{k}" for k in MACHINE})
    if ignored:
        print(f"note: resuming with the run's own settings; ignored {' '.join(ignored)}", file=sys.stderr)
    run = RunConfig.from_dict(cli.read_json(path, "run.json"))
    fit = {k: machine[k] for k in ("workers", "progress") if machine.get(k) is not None}
    return replace(run, threads=machine.get("threads") or run.threads, fit=replace(run.fit, **fit))


def prepare_out(run, out, resume=False):
    """The run folder: missing or empty for a new run (nothing a user has is overwritten), with run.json."""
    if not resume:
        cli.refuse_nonempty(out, hint="choose a new folder, or add --resume to continue the run in it")
        os.makedirs(out, exist_ok=True)
        cli.write_json(asdict(run), os.path.join(out, "run.json"))
    return out


# ----------------------------------------------------------------------------------------------
# Runs: one seed per folder, several seeds, a cell of a table.

def load_slices(run, splits=("train", "test")):
    """The run's slices, preprocessed (App. A) -> ({split: (x, y)}, a line saying what they are).
    x: (n, H, W) uint8; y: (n, H, W) uint8 in {0, 1}, or None in a pretext run (§3.3)."""
    masks = not run.pretext
    if run.data:
        parts = {s: data.read_split(run.data, s, masks=masks) for s in splits}
        found = {s: (data.warn_notes(p).images, p.masks) for s, p in parts.items()}
        line = f"data: {run.data}, layout {next(iter(parts.values())).layout}: " + ", ".join(
            f"{s} {len(p.images)} slices of {data.hw(p.images.shape[1:])}" for s, p in parts.items())
    else:
        side, sizes = run.image_side, {"train": run.train_images, "test": run.test_images}
        seeds = {"train": synthetic.TRAIN_SEED, "test": synthetic.TRAIN_SEED + 1}
        found = {s: synthetic.synthetic_em(sizes[s], side, side, seed=seeds[s]) for s in splits}
        line = (f"data: the built-in synthetic EM set, {run.train_images} train / {run.test_images} test "
                f"slices of {side}x{side}")
    hist = np.asarray(run.target_hist) if run.preprocess == "hist_match" else None
    return {s: (degrade.preprocess(x, run.preprocess, hist), y if masks else None)
            for s, (x, y) in found.items()}, line


def train_seeds(run, slices, device, out, resume=False):
    """run.repeats runs with seeds seed, seed + 1, ... (folders seed-k when more than one) -> results.
    With `resume`, finished seeds are read back and an interrupted one continues from its last.pt."""
    results = []
    for k in range(run.repeats):
        folder = out if run.repeats == 1 else os.path.join(out, f"seed-{k}")
        one = replace(run, repeats=1, fit=replace(run.fit, seed=run.fit.seed + k))
        if resume and os.path.isfile(os.path.join(folder, "results.json")):
            results.append(cli.read_json(os.path.join(folder, "results.json")))  # finished before
            continue
        os.makedirs(folder, exist_ok=True)
        results.append(train.train_run(one, slices, device, folder,
                                       resume=resume and os.path.isfile(os.path.join(folder, "last.pt"))))
    return results


def train_in(folder, run, device, drop_last=False):
    """results.json of the run `run` in `folder`: read if finished, resumed if started, else trained.
    A folder started with other settings is refused, naming the first difference. drop_last: delete
    the last.pt of a run this call finishes (only --resume needs it; ~580 MB for UNETR-2D Base)."""
    done, started = os.path.join(folder, "results.json"), os.path.isfile(os.path.join(folder, "run.json"))
    if started:
        saved = cli.read_json(os.path.join(folder, "run.json"), "run.json")
        diff = differences(saved, asdict(run))
        if diff:
            raise cli.UsageError(f"{folder} was trained with {diff}; pass the settings it was run with, or a "
                                 "new --out")
    if not os.path.isfile(done):
        print(f"\n== {folder}: {'resuming' if started else 'training'}", flush=True)
        slices, line = load_slices(run)
        print(line)
        prepare_out(run, folder, resume=started)
        with cli.torch_threads(run.threads):
            train.train_run(run, slices, device, folder,
                            resume=started and os.path.isfile(f"{folder}/last.pt"))
        if drop_last and os.path.isfile(os.path.join(folder, "last.pt")):
            os.remove(os.path.join(folder, "last.pt"))
    return cli.read_json(done, "results.json")


PATHS = ("data", "match_to", "init_from")


def differences(saved, wanted):
    """'epochs=4, this command asks for 8' for the first setting (machine ones aside) that differs."""
    fit_s, fit_w = saved.get("fit", {}), wanted.get("fit", {})
    pairs = [(k, saved.get(k), wanted[k]) for k in wanted if k not in ("fit", "threads")]
    pairs += [(k, fit_s.get(k), fit_w[k]) for k in fit_w if k not in ("workers", "progress", "amp")]
    norm = lambda k, v: os.path.realpath(v) if k in PATHS and isinstance(v, str) else v  # noqa: E731
    for key, a, b in pairs:
        a, b = (list(v) if isinstance(v, tuple) else v for v in (a, b))
        if norm(key, a) != norm(key, b):
            return f"{key}={a!r}, this command asks for {b!r}"
    return ""


def evaluate_checkpoint(path, device, data_dir=None, amp=False, threads=None):
    """Test-set numbers of a best.pt/last.pt on its run's test split or on `data_dir`'s (--eval-only;
    Table A.1 scores a source-trained network on the target so), in the run's thread count."""
    ckpt = models.load_checkpoint(path, "--eval-only")
    model = models.rebuild(ckpt, f"--eval-only {path}").to(device)
    run = RunConfig.from_dict(ckpt["run"])
    run = replace(run, data=data_dir or run.data, fit=replace(run.fit, amp=bool(amp)))
    with cli.torch_threads(threads or run.threads):  # the run's threads: its evaluation's rounding, exactly
        slices, line = load_slices(run, splits=("test",))
        print(line)
        metrics, _ = train.score_test_set(model, run, *slices["test"], device)
    params, params_keras = evaluate.count_parameters(model)
    sized = models.ARCHS[run.arch]["sized"]
    return {**metrics, "params": params, "params_with_bn_statistics": params_keras, "checkpoint": path,
            "data": run.data, "device": str(device),
            **evaluate.inference_numbers(model, run.tile if sized else 256, device, run.fit.amp)}


# ----------------------------------------------------------------------------------------------
# The command line of train.py.

def add_model_and_machine_flags(p):
    """train.py's flags for the synthetic set, the model knobs and the machine (parse_args has the rest)."""
    g = p.add_argument_group("the built-in synthetic set (without --data)")
    g.add_argument("--train-images", type=cli.at_least(int))
    g.add_argument("--test-images", type=cli.at_least(int))
    g.add_argument("--image-side", type=cli.at_least(int, 16))
    m = p.add_argument_group("model knobs (default: the arch's thesis best, Table 5.1 / App. B)")
    m.add_argument("--batch-norm", dest="batch_norm", action="store_true", default=None)
    m.add_argument("--no-batch-norm", dest="batch_norm", action="store_false")
    m.add_argument("--bn-momentum", type=cli.weight,
                   help="torch convention; 0.01 = the thesis code's Keras 0.99")
    m.add_argument("--dropout", type=cli.fraction, nargs="+",
                   help="one rate, or one per level incl. bottleneck")
    m.add_argument("--activation", choices=["relu", "elu", "gelu"])
    m.add_argument("--init", help="kernel initialiser: glorot_uniform or he_normal (Table 5.1)")
    m.add_argument("--attention-gates", action="store_true", default=None,
                   help="U-Net only (Table 5.1 last row)")
    m.add_argument("--fused-attention", action="store_true", default=None,
                   help="UNETR/YNETR: Eq. 2.1 by torch's fused kernel (same outputs to rounding)")
    r = p.add_argument_group("machine")
    r.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"], default="auto")
    r.add_argument("--amp", action="store_true", default=None,
                   help="bf16 autocast (CUDA, or a CPU with bf16 units)")
    r.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="NHWC weights, faster convolutions (on in the demo)")
    r.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    r.add_argument("--compile", action="store_true", default=None,
                   help="torch.compile the training model (GPU)")
    r.add_argument("--workers", type=cli.at_least(int, 0),
                   help="DataLoader workers (default 0 on CPU, 4 on GPU)")
    r.add_argument("--threads", type=cli.at_least(int), help="CPU threads for torch (1 in the demo)")
    r.add_argument("--progress", action="store_true", default=None,
                   help="the per-epoch bar even off a terminal")


def parse_args(argv):
    p = cli.ArgumentParser(description="Train and evaluate U-Net / UNETR-2D / YNETR-2D for mitochondria "
                                "segmentation (thesis §4.3). Without --data: a demo on the built-in "
                                "synthetic EM set.")
    p.add_argument("--arch", choices=list(models.ARCHS), default="unetr2d",
                   help="network (Tables 5.1-5.4, App. A)")
    p.add_argument("--size", choices=["mini", "small", "base"], default="mini",
                   help="transformer size (Table 5.3)")
    p.add_argument("--filters", type=cli.at_least(int),
                   help="initial filters F (default: 16 U-Net family, 32 others)")
    p.add_argument("--data", help=f"a data-set folder: {data.LAYOUT_HELP} (python data.py DIR checks one)")
    p.add_argument("--preset", choices=list(presets.PRESETS), help="settings (presets.py): thesis with "
                   "--data, demo without; every flag below overrides its preset's value")
    p.add_argument("--out", help="output folder (default runs/<arch>-<size>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last.pt")
    p.add_argument("--eval-only", metavar="CHECKPOINT",
                   help="evaluate a best.pt/last.pt on the test split and exit")
    p.add_argument("--summary", action="store_true",
                   help="print the parameter count beside the thesis's and exit")
    g = p.add_argument_group("training (§4.3.2, App. B)")
    g.add_argument("--epochs", type=cli.at_least(int, 0))
    g.add_argument("--patience", type=cli.at_least(int),
                   help="early-stopping patience on the validation loss")
    g.add_argument("--batch-size", type=cli.at_least(int))
    g.add_argument("--lr", type=cli.at_least(float, 0.0))
    g.add_argument("--weight-decay", type=cli.at_least(float, 0.0))
    g.add_argument("--loss", choices=["bce", "bce_dice"])
    g.add_argument("--optimizer", choices=["adamw", "adam", "sgd"])
    g.add_argument("--scheduler", choices=["cosine", "onecycle", "plateau", "none"])
    g.add_argument("--alpha", type=cli.weight, help="Attention Y-Net weight of the MSE term (App. A Eq. 1)")
    g.add_argument("--pretext", help="denoising pre-training (§3.3), comma separated: "
                   f"{', '.join(degrade.DEGRADATIONS)}")
    g.add_argument("--init-from", metavar="CHECKPOINT",
                   help="start from a checkpoint's matching tensors (§3.3)")
    g.add_argument("--seed", type=cli.at_least(int, 0))
    g.add_argument("--repeats", type=cli.at_least(int),
                   help="runs with seeds seed..seed+N-1; mean ± std (§5)")
    d = p.add_argument_group("data pipeline (§4.3.1-4.3.2)")
    d.add_argument("--tile", type=cli.at_least(int, 16),
                   help="training tile and transformer input side (256)")
    d.add_argument("--no-augment", dest="augment", action="store_false", default=None,
                   help="no rotations or flips")
    d.add_argument("--rotation", choices=data.ROTATIONS, help="any: uniform in [-180, 180], bilinear "
                   "(§4.3.2); any-nearest: the same angles, nearest neighbour; right: multiples of 90 "
                   "degrees (docs/rotation-study.md)")
    d.add_argument("--sampling", choices=["tiles", "crops"], help="tiles: the fixed grid (§4.3.1); crops: a "
                   "fresh random window per sample and epoch")
    d.add_argument("--val-fraction", type=cli.fraction,
                   help="share of the training tiles held out (0.1, §4.3.2)")
    d.add_argument("--preprocess", choices=degrade.PREPROCESSING, help="App. A baselines on every image the "
                   "model sees: CLAHE, or histogram matching to --match-to")
    d.add_argument("--match-to", metavar="DIR", help="--preprocess hist_match: the data set whose training "
                   "images give the mean histogram (App. A); its masks are never read")
    add_model_and_machine_flags(p)
    args = p.parse_args(argv)
    if args.init and args.init not in ("glorot_uniform", "he_normal"):
        hint = (f"; to start from a checkpoint use --init-from {args.init}" if os.path.exists(args.init)
                else "")
        raise cli.UsageError(f"--init {args.init}: a kernel initialiser, glorot_uniform or he_normal{hint}")
    return args


def report(run, results, out):
    """Final lines: test numbers (mean ± std over repetitions, as §5), the thesis's beside them."""
    key = "test_mse" if run.pretext else "test_iou_f"
    values = np.array([r[key] for r in results])
    line = f"test {key[5:]}: {values.mean():.4f}" + (f" ± {values.std():.4f} over {len(results)} runs"
                                                     if len(results) > 1 else "")
    if not run.pretext:
        line += (f"   (pooled IoU_F {np.mean([r['test_iou_f_global'] for r in results]):.4f}, "
                 f"Dice {np.mean([r['test_dice'] for r in results]):.4f})")
    print(line)
    thesis = thesis_numbers.iou_5_4(os.path.basename(os.path.normpath(run.data or "")),
                                    run.arch, run.size if models.ARCHS[run.arch]["sized"] else None)
    if thesis and not run.pretext:
        print(f"thesis (Table 5.4, {thesis_numbers.DATASETS_5_4[thesis[0]]}): IoU_F {thesis[1]}")
    print(f"inference {results[0]['inference_ms_per_patch']:.2f} ± {results[0]['inference_ms_std']:.2f} ms "
          f"per {results[0]['inference_patch']}x{results[0]['inference_patch']} patch on "
          f"{results[0]['device']}; outputs in {out}")
    if len(results) > 1:
        cli.write_json({key: values.tolist(), "mean": float(values.mean()), "std": float(values.std()),
                        "run": asdict(run)}, os.path.join(out, "summary.json"))
    if not run.data:
        print("real data: python data.py DIR, then python train.py --data DIR (Lucchi++, Kasthuri++ or your "
              "own)")



def train_command(argv):
    """python train.py ...: the settings, the data (refused before any folder exists), the run folder,
    each seed's run, the report. A caller in this process keeps its torch thread count."""
    started = time.perf_counter()
    try:
        args = parse_args(argv)
        given = {k: v for k, v in vars(args).items() if k not in PROGRAM}
        # the thesis's networks, at the thesis's settings unless a preset or flag says otherwise
        if args.summary:
            run = make_config(preset=args.preset or "thesis", **given)
            return print("\n".join(models.summary(run.arch, run.size, run.filters, run.model_kwargs)))
        device = cli.pick_device(args.device)
        if args.eval_only:
            return eval_only(args, device)
        if args.resume:
            run = resumed_config(args.out, argv, vars(args))
        else:
            run = make_config(preset=args.preset, device_type=device.type, **given)
        device = distributed.join_torchrun(device)
        slices, line = load_slices(run)  # bad data is refused here, before the run folder exists
        print(line)
        distributed.check_batch(run.fit.batch_size)
        sized = models.ARCHS[run.arch]["sized"]
        out = args.out or os.path.join("runs", f"{run.arch}-{run.size if sized else 'cnn'}-"
                                               f"{time.strftime('%Y%m%d-%H%M%S')}")
        out = distributed.from_rank0(prepare_out, run, out, args.resume)
        how = "picked automatically" if args.device == "auto" else "as asked"
        print(f"device: {device} ({how}){distributed.describe(run.fit.batch_size)}")
        thesis = {**presets.THESIS, "filters": models.ARCHS[run.arch]["filters"]}
        changed = presets.differences({**asdict(run), **asdict(run.fit)}, thesis)
        print(f"preset {run.preset}: " + (changed or "the thesis protocol (§4.3.2)"))
        with cli.torch_threads(run.threads):  # docs/speed.md: the demo's small tensors run fastest on one
            results = train_seeds(run, slices, device, out, resume=args.resume)
        if not distributed.is_main():
            return None
        report(run, results, out)
        print(f"total wall time {cli.clock(time.perf_counter() - started)}")
        return results[0] if run.repeats == 1 else results
    finally:
        distributed.leave()


def eval_only(args, device):
    """--eval-only CHECKPOINT [--data DIR] [--out OUT]: print (and keep in OUT/eval.json) its test numbers."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise cli.UsageError("--eval-only evaluates in one process: start it with python, not torchrun")
    if args.out:
        cli.refuse_nonempty(args.out)
    metrics = evaluate_checkpoint(args.eval_only, device, args.data, args.amp, args.threads)
    print("\n".join(f"{k}: {v}" for k, v in metrics.items() if k != "per_slice"))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        cli.write_json(metrics, os.path.join(args.out, "eval.json"))
    return metrics
