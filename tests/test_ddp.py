"""train.py under torchrun: two CPU processes (gloo) train the curve of one process with the same
whole batch, rank 0 alone logs and writes, and a run one process began resumes under torchrun."""
import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import distributed
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 14 training tiles: batches of 4, 4, 4, 2, so the last one is split 1 + 1 between the processes.
# No dropout, no BatchNorm and BCE (a mean over pixels, unlike Dice, which each process takes over its own
# share of the batch): the two processes then compute exactly the one-process step.
TINY = ["--arch", "unet", "--filters", "4", "--dropout", "0", "--loss", "bce", "--tile", "32", "--image-side",
        "64", "--train-images", "4", "--test-images", "1", "--batch-size", "4", "--epochs", "3", "--device", "cpu"]


def _torchrun(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "train.py",
           *args]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def _curve(out):
    with open(os.path.join(out, "log.csv")) as f:
        return np.array([[float(r["train_loss"]), float(r["val_loss"]), float(r["val_iou_f"])]
                         for r in csv.DictReader(f)])


def test_two_processes_train_the_one_process_curve_and_resume_its_run(tmp_path, interrupt_epoch):
    single, double, split = str(tmp_path / "single"), str(tmp_path / "double"), str(tmp_path / "split")
    train.main(TINY + ["--out", single])
    stdout = _torchrun(*TINY, "--out", double)
    one, two = _curve(single), _curve(double)
    assert one.shape == (3, 3) and len(np.unique(one[:, 0])) == 3  # a curve that moves
    np.testing.assert_allclose(two, one, rtol=1e-5, atol=1e-6)
    # Rank 0 alone prints and writes: one line per epoch, one results.json with the reduced numbers.
    assert sum(line.startswith("epoch ") for line in stdout.splitlines()) == 3
    assert "torchrun: 2 processes (gloo)" in stdout
    r1, r2 = (json.load(open(os.path.join(d, "results.json"))) for d in (single, double))
    assert r2["epochs_run"] == 3 and r2["best_epoch"] == r1["best_epoch"]
    assert r2["best_val_loss"] == pytest.approx(r1["best_val_loss"], rel=1e-5)

    # A one-process run stopped after epoch 2 resumes under torchrun and ends on the same curve.
    interrupt_epoch(3)
    with pytest.raises(SystemExit):
        train.main(TINY + ["--out", split])
    assert len(_curve(split)) == 2
    _torchrun("--out", split, "--resume", "--device", "cpu")
    np.testing.assert_allclose(_curve(split), one, rtol=1e-5, atol=1e-6)


def test_a_batch_the_processes_cannot_share_is_refused_before_anything_is_written(tmp_path, monkeypatch,
                                                                                   capsys):
    monkeypatch.setattr(distributed, "world", lambda: (0, 2))  # as torchrun --nproc_per_node=2 would give
    flags = [f if f != "4" or TINY[i - 1] != "--batch-size" else "3" for i, f in enumerate(TINY)]
    with pytest.raises(SystemExit) as exit_info:
        train.main(flags + ["--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: --batch-size 3 is the whole batch, shared by the 2 processes of torchrun: use a "
                   "multiple of 2")
    assert not (tmp_path / "run").exists()
