"""The cells of a table: one training run per folder, reused when finished, resumed when interrupted.

Thesis: §5 (every number of its tables is the mean ± std of repeated runs, 10 per cell). reproduce.py
and rotation_study.py train their cells through `train_in`: a folder with results.json is read back, a
folder with run.json but no results goes on from its last.pt, a new folder is trained. A folder started
with other settings is refused, naming the first difference, so a table never mixes two protocols.
The run itself is train.py's (`train.load_slices`, `train.train_run`); its settings are a
`presets.RunConfig` made by `presets.make_config`.
"""
import os
from dataclasses import asdict

import cli
import train

PATHS = ("data", "match_to", "init_from")  # settings compared as the folders they name
DERIVED = ("target_hist", "intensity")      # decided by the data, which the other settings name
MACHINE = ("threads",)                      # how fast, not what: a table may move to another machine
MACHINE_FIT = ("workers", "progress", "amp")


def differences(saved, wanted):
    """'epochs=4, this command asks for 8' for the first setting (machine ones aside) that differs."""
    fit_s, fit_w = saved.get("fit", {}), wanted.get("fit", {})
    pairs = [(k, saved.get(k), wanted[k]) for k in wanted if k not in ("fit",) + MACHINE + DERIVED]
    pairs += [(k, fit_s.get(k), fit_w[k]) for k in fit_w if k not in MACHINE_FIT]
    norm = lambda k, v: os.path.realpath(v) if k in PATHS and isinstance(v, str) else v  # noqa: E731
    for key, a, b in pairs:
        a, b = (list(v) if isinstance(v, tuple) else v for v in (a, b))
        if norm(key, a) != norm(key, b):
            return f"{key}={a!r}, this command asks for {b!r}"
    return ""


def train_in(folder, run, device, drop_last=False):
    """results.json of the run `run` in `folder`: read if finished, resumed if started, else trained.
    A folder started with other settings is refused, naming the first difference. drop_last: delete
    the last.pt of a run this call finishes (only --resume needs it; ~580 MB for UNETR-2D Base)."""
    done, started = os.path.join(folder, "results.json"), os.path.isfile(os.path.join(folder, "run.json"))
    if started:
        diff = differences(cli.read_json(os.path.join(folder, "run.json"), "run.json"), asdict(run))
        if diff:
            raise cli.UsageError(f"{folder} was trained with {diff}; pass the settings it was run with, or a "
                                 "new --out")
    if not os.path.isfile(done):
        print(f"\n== {folder}: {'resuming' if started else 'training'}", flush=True)
        run, slices, line = train.load_slices(run)
        print(line)
        train.prepare_out(run, folder, resume=started)
        with cli.torch_threads(run.threads):
            train.train_run(run, slices, device, folder,
                            resume=started and os.path.isfile(os.path.join(folder, "last.pt")))
        if drop_last and os.path.isfile(os.path.join(folder, "last.pt")):
            os.remove(os.path.join(folder, "last.pt"))
    return cli.read_json(done, "results.json")
