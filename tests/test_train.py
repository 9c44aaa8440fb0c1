"""train.py: metrics on hand-made masks, schedules against their formulas and torch's own, and short
end-to-end runs on tiny models and tiny synthetic images (outputs, prediction reproducing the run's own
evaluation, resume, refusals)."""
import csv
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import cli
import data
import evaluate
import models
import predict
import presets
import schedules
import synthetic
import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--arch", "unet", "--filters", "4", "--tile", "32", "--image-side", "64", "--train-images", "4",
        "--test-images", "2", "--batch-size", "4", "--device", "cpu"]


def _torch_lrs(make_sched, steps, lr):
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = make_sched(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return lrs


def _our_lrs(kind, steps, lr):
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = schedules.Scheduler(opt, kind, lr, steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        sched.step()
    return lrs


def test_cosine_schedule_follows_formula_and_torch():
    steps, lr = 50, 1e-3
    ours = _our_lrs("cosine", steps, lr)
    formula = [lr * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=steps, eta_min=0), steps,
                     lr)
    np.testing.assert_allclose(ours, formula, rtol=1e-12)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-15)
    assert ours[0] == lr and schedules.cosine_lr(steps, steps, lr) == 0.0


def test_one_cycle_schedule_equals_torch_onecycle():
    steps, lr = 40, 2e-4
    ours = _our_lrs("onecycle", steps, lr)
    ref = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=lr, total_steps=steps), steps,
                     lr)
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert max(ours) == pytest.approx(lr) and ours[0] == pytest.approx(lr / 25)


def test_one_cycle_cycles_sgd_momentum_as_torch_and_leaves_adam_beta1():
    steps, lr = 40, 1e-2
    ours, ref = (torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.99) for _ in "ab")
    sched = schedules.Scheduler(ours, "onecycle", lr, steps)
    torch_sched = torch.optim.lr_scheduler.OneCycleLR(ref, max_lr=lr, total_steps=steps)  # cycles momentum
    got, want = [], []
    for _ in range(steps):
        got.append(ours.param_groups[0]["momentum"])
        want.append(ref.param_groups[0]["momentum"])
        ref.step()
        sched.step(), torch_sched.step()
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == pytest.approx(0.95) and min(got) == pytest.approx(0.85)
    adam = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    sched = schedules.Scheduler(adam, "onecycle", lr, steps)
    for _ in range(steps // 2):
        sched.step()
    assert adam.param_groups[0]["betas"] == (0.9, 0.999)  # Keras's Adam has no momentum to cycle
    sgd = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.99)
    schedules.Scheduler(sgd, "cosine", lr, steps).step()
    assert sgd.param_groups[0]["momentum"] == 0.99  # App. B's SGD momentum under the other schedules


def test_plateau_halves_after_patience_and_stops_at_a_tenth():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = schedules.Scheduler(opt, "plateau", 1.0, 100, patience=2)
    seen = []
    for loss in [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]:
        sched.step()                          # per-step calls must not change a plateau schedule
        sched.epoch_end(loss)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == [1.0, 1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.25, 0.125, 0.125, 0.1, 0.1, 0.1, 0.1]


def _run(tmp_path, name, *extra):
    out = str(tmp_path / name)
    train.main(TINY + ["--out", out, *extra])
    return out


def _losses(out):
    with open(os.path.join(out, "log.csv")) as f:
        return [(float(r["train_loss"]), float(r["val_loss"])) for r in csv.DictReader(f)]


def test_short_run_writes_every_output_and_prediction_reproduces_its_evaluation(tmp_path, monkeypatch):
    # Make epoch 2 the best and epoch 3 worse, so that best.pt and last.pt differ.
    original, calls = train.validate, {"n": 0}

    def scripted_validate(*a, **k):
        loss, iou = original(*a, **k)
        calls["n"] += 1  # call 1 is before training
        return {1: 0.5, 2: 0.9, 3: 0.1, 4: 0.7}.get(calls["n"], loss), iou

    monkeypatch.setattr(train, "validate", scripted_validate)
    out = _run(tmp_path, "run", "--epochs", "3")
    monkeypatch.setattr(train, "validate", original)
    for name in ("results.json", "log.csv", "best.pt", "last.pt", "curves.png", "pred_0.png", "pred_1.png",
                 "run.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["epochs_run"] == 3 and len(_losses(out)) == 3 and results["best_epoch"] == 2
    assert results["params"] == sum(p.numel() for p in models.build_model("unet", filters=4).parameters())
    assert Image.open(os.path.join(out, "pred_0.png")).size == (64, 64)
    # The same synthetic slices as a folder: predict.py scores the checkpoint exactly as the run did.
    root = synthetic.write_dataset(str(tmp_path / "set"), 4, 2, 64, synthetic.TRAIN_SEED,
                                   test_seed=synthetic.TRAIN_SEED + 1)
    metrics = predict.main([os.path.join(out, "best.pt"), root, "--masks", root, "--device", "cpu",
                            "--out", str(tmp_path / "eval")])
    for key in ("test_iou_f", "test_iou_f_global", "test_dice", "test_dice_global"):
        assert metrics[key] == results[key], key
    assert json.load(open(tmp_path / "eval" / "metrics.json"))["test_iou_f"] == metrics["test_iou_f"]
    # The test numbers are those of the best epoch's weights, not the last epoch's.
    best = torch.load(os.path.join(out, "best.pt"), weights_only=False)["model"]
    last = torch.load(os.path.join(out, "last.pt"), weights_only=False)["model"]
    assert any(not torch.equal(best[k], last[k]) for k in best)


def test_resume_continues_the_same_curve(tmp_path, monkeypatch, interrupt_epoch):
    straight = _run(tmp_path, "straight", "--epochs", "3")
    original = interrupt_epoch(3)
    with pytest.raises(SystemExit) as exit_info:
        _run(tmp_path, "split", "--epochs", "3")
    assert exit_info.value.code == 130
    split = str(tmp_path / "split")
    assert torch.load(os.path.join(split, "last.pt"), weights_only=False)["state"]["epoch"] == 2
    monkeypatch.setattr(train, "train_one_epoch", original)
    train.main(["--out", split, "--resume", "--device", "cpu"])
    assert _losses(split) == _losses(straight)


@pytest.mark.parametrize("existing", ["results.json", "log.csv", "notes.txt"])
def test_existing_out_is_never_touched(tmp_path, capsys, existing):
    out = tmp_path / "taken"
    out.mkdir()
    (out / existing).write_text("precious")
    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY + ["--out", str(out), "--epochs", "1"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(out) in err
    assert (out / existing).read_text() == "precious" and sorted(os.listdir(out)) == [existing]


def _write_pair(root, split, names, sizes):
    for sub in ("x", "y"):
        (root / split / sub).mkdir(parents=True, exist_ok=True)
    for name, size in zip(names, sizes):
        Image.fromarray(np.full(size, 100, np.uint8)).save(root / split / "x" / name)
        Image.fromarray(np.zeros(size, np.uint8)).save(root / split / "y" / name)


@pytest.mark.parametrize("case, expected", [
    ("missing", "test/x"),
    ("count", "train/y"),
    ("size", "b.png"),
    ("empty", "test/x"),
    ("corrupt", "a.png"),
    ("no foreground", "no foreground"),
])
def test_bad_data_exits_2_with_one_line(tmp_path, capsys, case, expected):
    root = tmp_path / "data"
    _write_pair(root, "train", ["a.png", "b.png"], [(40, 40), (40, 40)])
    if case != "no foreground":  # a mitochondrion in the first mask: a split with something to learn
        Image.fromarray(np.pad(np.ones((4, 4), np.uint8), 18)).save(root / "train" / "y" / "a.png")
    if case not in ("missing", "empty"):
        _write_pair(root, "test", ["a.png"], [(40, 40)])
    if case == "missing":  # no masks either: nothing to hold a test split out of
        shutil.rmtree(root / "train" / "y")
    if case == "empty":
        (root / "test" / "x").mkdir(parents=True)
        (root / "test" / "y").mkdir(parents=True)
    if case == "corrupt":
        (root / "test" / "x" / "a.png").write_bytes(b"not a png at all")
    if case == "count":
        os.remove(root / "train" / "y" / "b.png")
    if case == "size":
        Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "train" / "y" / "b.png")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--data", str(root), "--out", str(tmp_path / "o"), "--arch", "unet", "--filters", "4",
                    "--tile", "32", "--epochs", "1", "--device", "cpu"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1


def test_bad_data_in_a_real_process_prints_one_line_and_no_traceback(tmp_path):
    root = tmp_path / "data"
    _write_pair(root, "train", ["a.png"], [(40, 40)])  # no test split
    proc = subprocess.run([sys.executable, "train.py", "--data", str(root), "--out", str(tmp_path / "o"),
                           "--device", "cpu"], cwd=os.path.dirname(os.path.abspath(train.__file__)),
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert "test/x" in proc.stderr and not os.path.exists(tmp_path / "o" / "last.pt")


@pytest.mark.parametrize("flags, expected", [
    (["--dropout", "0.1", "0.2"], "dropout"),
    (["--init", "missing.pt"], "glorot_uniform or he_normal"),
    (["--init", "EXISTING"], "use --init-from"),  # the old spelling of a checkpoint names the new flag
    (["--init-from", "missing.pt"], "missing.pt"),
    (["--seed", "-1"], "--seed"),
    (["--alpha", "1.5"], "--alpha"),
])
def test_bad_settings_exit_2_with_one_line_and_create_nothing(tmp_path, capsys, flags, expected):
    (tmp_path / "kept.pt").write_text("a file")
    flags = [str(tmp_path / "kept.pt") if f == "EXISTING" else f for f in flags]
    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY + ["--out", str(tmp_path / "o"), "--epochs", "1", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()


def test_negative_seed_in_a_real_process_is_refused_before_any_folder(tmp_path):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"), "--seed", "-1", "--device", "cpu"],
                          cwd=str(tmp_path), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "--seed" in proc.stderr
    assert os.listdir(tmp_path) == []


def test_init_from_no_checkpoint_or_one_that_fits_nothing_is_refused_before_any_folder(tmp_path, capsys):
    bogus = tmp_path / "best.pt"
    bogus.write_text("hello")
    other = tmp_path / "other.pt"  # a real checkpoint, of a network with nothing in common
    torch.save({"model": {"stem.weight": torch.zeros(3, 3)}}, other)
    _run(tmp_path, "cnn", "--epochs", "0")  # a unet F=4: only its output head's 1-element bias fits
    for source, expected in ((bogus, "not a checkpoint"), (other, "1 tensors of no network"),
                             (tmp_path / "cnn" / "best.pt", "holds a unet F=4; 1 of its")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            train.main(TINY + ["--arch", "unetr2d", "--filters", "6", "--epochs", "1", "--out",
                               str(tmp_path / "o"), "--init-from", str(source)])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o").exists()
    assert "unetr2d mini F=6" in err  # both networks are named


def test_amp_on_a_cpu_without_bf16_is_refused_before_any_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(evaluate, "bf16_supported", lambda device: False)
    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY + ["--out", str(tmp_path / "o"), "--epochs", "1", "--amp"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "bf16" in err and "drop the flag" in err
    assert not (tmp_path / "o").exists()
    monkeypatch.setattr(evaluate, "bf16_supported", lambda device: True)
    assert _run(tmp_path, "amp", "--epochs", "1", "--amp")  # where the CPU has it, --amp trains


def test_repeats_report_mean_and_resume_keeps_finished_seeds(tmp_path, monkeypatch, capsys):
    out = str(tmp_path / "rep")
    calls, original = {"n": 0}, train.train_one_epoch

    def interrupt_second_seed(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:  # seed 0 trains one epoch, seed 1 is interrupted in its first
            raise KeyboardInterrupt
        return original(*a, **k)

    monkeypatch.setattr(train, "train_one_epoch", interrupt_second_seed)
    with pytest.raises(SystemExit):
        train.main(TINY + ["--out", out, "--epochs", "1", "--repeats", "2"])
    first = open(os.path.join(out, "seed-0", "results.json")).read()
    assert not os.path.exists(os.path.join(out, "seed-1", "results.json"))
    monkeypatch.setattr(train, "train_one_epoch", original)
    capsys.readouterr()
    results = train.main(["--out", out, "--resume", "--device", "cpu"])
    assert open(os.path.join(out, "seed-0", "results.json")).read() == first
    summary = json.load(open(os.path.join(out, "summary.json")))
    values = [r["test_iou_f"] for r in results]
    assert summary["test_iou_f"] == values and summary["mean"] == pytest.approx(np.mean(values))
    assert [r["run"]["fit"]["seed"] for r in results] == [0, 1]
    assert "over 2 runs" in capsys.readouterr().out


def test_summary_prints_the_thesis_count_and_model_flags_reach_attention_unet(capsys):
    train.main(["--arch", "unetr2d", "--size", "mini", "--summary"])
    out = capsys.readouterr().out
    assert "4,243,553" in out and "4.24M" in out
    train.main(["--arch", "attention_unet", "--summary"])
    default = capsys.readouterr().out
    train.main(["--arch", "attention_unet", "--batch-norm", "--summary"])
    with_bn = capsys.readouterr().out
    assert "1,985,061" in default and "1,985,061" not in with_bn  # BN adds its scale and shift


def test_init_loads_matching_tensors_and_keeps_a_different_position_embedding(tmp_path, capsys):
    small = ["--arch", "unetr2d", "--size", "mini", "--filters", "4", "--image-side", "64",
             "--train-images", "4", "--test-images", "1", "--batch-size", "4", "--device", "cpu",
             "--epochs", "0"]
    train.main(small + ["--tile", "32", "--out", str(tmp_path / "a")])
    capsys.readouterr()
    train.main(small + ["--tile", "64", "--out", str(tmp_path / "b"), "--init-from",
                        str(tmp_path / "a" / "best.pt")])
    printed = capsys.readouterr().out
    assert "kept as initialised: 1 (encoder.patch_embed)" in printed and "encoder.blocks" in printed
    a = torch.load(tmp_path / "a" / "best.pt", weights_only=False)["model"]
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=False)["model"]
    assert a["encoder.patch_embed.pos_embed"].shape != b["encoder.patch_embed.pos_embed"].shape
    for key in a:
        if key != "encoder.patch_embed.pos_embed":
            assert torch.equal(a[key], b[key]), key


def test_pretext_lowers_mse_and_init_loads_its_weights(tmp_path, capsys):
    root = tmp_path / "unlabelled"
    images, _ = synthetic.synthetic_em(8, 64, 64, seed=5)
    for split in ("train", "test"):
        (root / split / "x").mkdir(parents=True)
        for i, img in enumerate(images):
            Image.fromarray(img).save(root / split / "x" / f"{i:02d}.png")
    common = ["--data", str(root), "--arch", "unet", "--filters", "4", "--tile", "32", "--batch-size", "4",
              "--device", "cpu", "--lr", "3e-3", "--dropout", "0"]
    pre = str(tmp_path / "pre")
    res = train.main(common + ["--out", pre, "--epochs", "10", "--pretext", "gaussian_blur,cutout"])
    assert res["task"] == "pretext" and res["best_val_loss"] < 0.7 * res["val_loss_before"]
    capsys.readouterr()
    # Fine-tuning needs masks: give the same images labels, start from the pretext weights, train 0 epochs.
    for split in ("train", "test"):
        (root / split / "y").mkdir()
        for i in range(len(images)):
            Image.fromarray((images[i] > 128).astype(np.uint8)).save(root / split / "y" / f"{i:02d}.png")
    seg = str(tmp_path / "seg")
    train.main(common + ["--out", seg, "--epochs", "0", "--init-from", os.path.join(pre, "best.pt")])
    assert "every tensor matched" in capsys.readouterr().out
    source = torch.load(os.path.join(pre, "best.pt"), weights_only=False)["model"]
    loaded = torch.load(os.path.join(seg, "best.pt"), weights_only=False)["model"]
    assert set(source) == set(loaded)
    for key in source:
        assert torch.equal(source[key], loaded[key]), key


def test_non_finite_loss_stops_with_message_and_keeps_checkpoint(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(train, "compute_loss", lambda out, x, y, **kw: out.mean() * float("nan"))
    with pytest.raises(SystemExit) as exit_info:
        _run(tmp_path, "nan", "--epochs", "2")
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "nan" in err and "lower --lr" in err
    assert torch.load(tmp_path / "nan" / "last.pt", weights_only=False)["state"]["epoch"] == 0


def test_build_model_rejects_unknown_arch_and_flags(capsys):
    with pytest.raises(ValueError, match="unet"):
        models.build_model("vnet")
    with pytest.raises(SystemExit):
        train.main(["--arch", "unetr2d", "--attention-gates", "--summary"])
    assert "does not apply" in capsys.readouterr().err


def test_val_fraction_zero_trains_on_every_tile_and_keeps_the_final_weights(tmp_path, capsys):
    out = _run(tmp_path, "noval", "--epochs", "2", "--val-fraction", "0")
    assert "16 training / 0 validation tiles" in capsys.readouterr().out  # 4 slices of 64px, tiles of 32
    results = json.load(open(os.path.join(out, "results.json")))
    assert results["best_epoch"] == results["epochs_run"] == 2 and results["best_val_loss"] is None
    assert all(math.isnan(val) for _, val in _losses(out))
    best = torch.load(os.path.join(out, "best.pt"), weights_only=False)["model"]
    last = torch.load(os.path.join(out, "last.pt"), weights_only=False)["model"]
    assert all(torch.equal(best[k], last[k]) for k in best)   # the test numbers are the final weights'


def test_sampling_crops_holds_out_whole_slices_and_rotation_reaches_the_dataset(tmp_path, monkeypatch):
    run = presets.make_config("unet", filters=4, tile=32, image_side=64, train_images=4, test_images=2,
                              sampling="crops")
    run, slices, _ = train.load_slices(run)
    train_set, val_set = train.training_sets(run, *slices["train"], seed=0)
    images, masks = synthetic.synthetic_em(4, 64, 64, seed=synthetic.TRAIN_SEED)
    padded = data.pad_to_multiple(images, 32)
    kept = [i for i in range(4) if any(np.array_equal(padded[i], s) for s in train_set.images)]
    held = [i for i in range(4) if i not in kept]
    assert len(kept) == 3 and len(held) == 1                  # 10% of 4 slices, rounded up
    np.testing.assert_array_equal(val_set.images, data.extract_tiles(images[held], 32))
    np.testing.assert_array_equal(val_set.masks, data.extract_tiles(masks[held], 32))
    seen = {}

    class Recording(data.CropDataset):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            seen.update(k, length=len(self))

    monkeypatch.setattr(data, "CropDataset", Recording)
    _run(tmp_path, "crops", "--epochs", "1", "--sampling", "crops", "--rotation", "right")
    assert seen["rotation"] == "right" and seen["tile"] == 32 and seen["length"] == 3 * 4


@pytest.mark.parametrize("flags, expected", [
    (["--val-fraction", "1"], "--val-fraction"),
    (["--val-fraction", "0", "--scheduler", "plateau"], "plateau"),
    (["--rotation", "diagonal"], None),
])
def test_data_pipeline_flags_default_to_the_thesis_and_refuse_bad_values(tmp_path, capsys, flags, expected):
    run = presets.make_config("unet", data=str(tmp_path))
    assert (run.rotation, run.sampling, run.val_fraction, run.preset) == ("any", "tiles", 0.1,
                                                                          "thesis")  # §4.3.2
    with pytest.raises(SystemExit) as exit_info:
        train.main(TINY + ["--out", str(tmp_path / "o"), "--epochs", "1", *flags])
    assert exit_info.value.code == 2 and not os.path.exists(tmp_path / "o" / "last.pt")
    if expected:
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1


def test_demo_runs_on_one_thread_threads_flag_overrides_and_the_caller_keeps_its_own(tmp_path, monkeypatch):
    seen, original = [], train.train_one_epoch

    def spy(*a, **k):
        seen.append(torch.get_num_threads())
        return original(*a, **k)

    monkeypatch.setattr(train, "train_one_epoch", spy)
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        _run(tmp_path, "demo", "--epochs", "1")  # the demo preset: one thread
        assert seen == [1] and torch.get_num_threads() == 3
        _run(tmp_path, "two", "--epochs", "1", "--threads", "2")
        assert seen[-1] == 2 and torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


def test_demo_turns_batchnorm_on_for_the_attention_gated_cnns_only():
    for arch in models.ARCHS:
        gated = arch in ("attention_unet", "attention_ynet")
        assert bool(presets.make_config(arch).batch_norm) == gated, arch
        assert presets.make_config(arch, preset="quick").batch_norm is None, arch  # quick: the thesis's
    assert presets.make_config("attention_unet", data="DIR").batch_norm is None  # the thesis: none
    assert presets.make_config("attention_unet", batch_norm=False).batch_norm is False
    run = presets.make_config("attention_ynet", filters=4)
    model = models.build_model(run.arch, filters=4, **run.model_kwargs)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_the_demo_turns_by_right_angles_except_for_unetr2d_and_only_in_the_demo():
    for arch in models.ARCHS:
        assert presets.make_config(arch).rotation == ("any" if arch == "unetr2d" else "right"), arch
        for preset in ("quick", "light", "thesis"):  # an arch's demo settings stay in the demo
            assert presets.make_config(arch, preset=preset).rotation == "any", (arch, preset)
    assert presets.make_config("unet", rotation="any-nearest").rotation == "any-nearest"  # a flag wins
    assert "rotation right (thesis any)" in presets.differences(presets.for_arch("demo", "unet"))


def test_only_the_unetr2d_demo_runs_one_cycle_and_gelu():
    for arch in models.ARCHS:
        demo = presets.make_config(arch)  # the others' epochs were set under cosine and their own activation
        assert (demo.fit.scheduler, demo.activation) == \
            (("onecycle", "gelu") if arch == "unetr2d" else ("cosine", None)), arch
        for preset in ("quick", "light", "thesis", "cpu"):
            run = presets.make_config(arch, preset=preset)
            assert (run.fit.scheduler, run.activation) == ("cosine", None), (arch, preset)
    assert presets.make_config("unetr2d", scheduler="cosine").fit.scheduler == "cosine"  # a flag wins
    assert presets.make_config("unetr2d", activation="relu").activation == "relu"
    demo = presets.make_config("unetr2d")
    model = models.build_model("unetr2d", "mini", filters=4, **demo.model_kwargs)
    acts = [type(m) for m in model.modules() if isinstance(m, (torch.nn.GELU, torch.nn.ReLU))]
    assert acts and set(acts) == {torch.nn.GELU}  # the convolutional part's and the ViT's MLP's
    assert "activation gelu (thesis the arch's)" in presets.differences(presets.for_arch("demo", "unetr2d"))


def test_presets_are_the_thesis_protocol_and_named_changes():
    thesis = presets.make_config("unetr2d", data="DIR")
    assert (thesis.fit.epochs, thesis.fit.patience, thesis.fit.batch_size, thesis.fit.lr,
            thesis.fit.weight_decay, thesis.fit.optimizer, thesis.fit.scheduler, thesis.tile,
            thesis.filters) == \
        (360, 60, 6, 1e-4, 1e-5, "adamw", "cosine", 256, 32)  # §4.3.2, App. B Table 2
    demo = presets.make_config("unetr2d")
    assert demo.preset == "demo" and demo.fit.epochs == presets.DEMO["epochs"] and demo.tile == 128
    assert presets.make_config("unet").fit.epochs == presets.DEMO_ARCH["unet"]["epochs"] != demo.fit.epochs
    assert presets.make_config("unet", preset="quick").fit.epochs == presets.QUICK["epochs"]
    # the thesis protocol on synthetic data
    assert presets.make_config("unet", preset="thesis").fit.epochs == 360
    for name, preset in presets.PRESETS.items():
        assert set(presets.THESIS) <= set(preset), name  # every preset is {**THESIS, ...}
    assert presets.differences({**presets.THESIS}) == ""
    assert presets.differences({**presets.THESIS, "tile": 128}) == "tile 128 (thesis 256)"


def test_a_run_gives_its_steps_first_and_names_the_cpu_recipe_when_its_eta_is_long(tmp_path, capsys,
                                                                                   monkeypatch):
    monkeypatch.setattr(train, "LONG_ON_A_CPU", 0)  # every ETA is long
    _run(tmp_path, "long", "--epochs", "2")
    out = capsys.readouterr().out
    assert "14 training / 2 validation tiles of 32px; 4 steps per epoch, 8 in all, on cpu" in out
    assert out.count("--preset cpu") == 1  # once, after the first epoch
    monkeypatch.setattr(train, "LONG_ON_A_CPU", 10 ** 9)
    _run(tmp_path, "short", "--epochs", "2")
    assert "--preset cpu" not in capsys.readouterr().out


def test_the_eta_leaves_out_the_first_epoch_once_there_are_others(tmp_path, capsys, monkeypatch):
    """The first epoch carries the warm-ups and --compile's compilation: 30 s, then 1 s an epoch, leaves
    8 epochs of 1 s after the second, not 8 of 15.5 s."""
    cfg = presets.make_config("unet", epochs=10).fit
    clock = {"start": 0.0, "loop": 0.0, "first_epoch": 0, "cpu": False}
    state = {"history": []}
    for epoch, now in [(1, 30.0), (2, 31.0), (3, 32.0)]:
        state["history"].append({"epoch": epoch, "train_loss": 0.5, "val_loss": 0.5, "val_iou_f": 0.1,
                                 "lr": 1e-3, "seconds": 1.0})
        monkeypatch.setattr(train.time, "perf_counter", lambda: now)
        train.log_epoch(str(tmp_path), state, cfg, "", clock)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"ETA {cli.clock(9 * 30.0)}")
    assert lines[1].endswith(f"ETA {cli.clock(8 * 1.0)}") and lines[2].endswith(f"ETA {cli.clock(7 * 1.0)}")


@pytest.mark.parametrize("name", ["adamw", "adam"])
def test_the_optimisers_fused_kernel_takes_the_steps_of_torchs_plain_one(name):
    torch.manual_seed(0)
    weights = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(3))]
    plain = [torch.nn.Parameter(w.detach().clone()) for w in weights]
    ours = schedules.make_optimizer(name, weights, 1e-2, 1e-2)
    cls = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
    reference = cls(plain, lr=1e-2, **({"weight_decay": 1e-2} if name == "adamw" else {}))
    for step in range(5):
        for a, b in zip(weights, plain):
            a.grad = b.grad = torch.sin(torch.arange(a.numel(), dtype=torch.float32) + step).reshape(a.shape)
        ours.step(), reference.step()
    for a, b in zip(weights, plain):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
        assert not torch.equal(a, torch.zeros_like(a))


def test_vit_dropout_reaches_both_dropouts_of_the_transformer_and_is_refused_for_a_cnn(capsys):
    def rates(run):
        model = train.build_network(run)
        return ({m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)},
                {m.dropout for m in model.modules() if hasattr(m, "q_proj")})
    assert rates(presets.make_config("unetr2d", data="DIR", filters=4)) == ({0.1}, {0.1})  # the thesis's
    assert rates(presets.make_config("ynetr2d", data="DIR", filters=4, vit_dropout=0.05))[1] == {0.05}
    assert rates(presets.make_config("unetr2d", data="DIR", filters=4, vit_dropout=0.0)) == ({0.0}, {0.0})
    with pytest.raises(SystemExit):
        train.main(["--arch", "unet", "--vit-dropout", "0", "--summary"])
    assert "--vit-dropout does not apply to --arch unet" in capsys.readouterr().err
