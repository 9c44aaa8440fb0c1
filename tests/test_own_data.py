"""Own data through the programs: a 12-bit camera's slices, slices of different sizes, a flat images + masks
folder and a whole montage train with train.py and are segmented by predict.py exactly as the run's own
evaluation scored them; what cannot train stops with one line. Tiny generated files only."""
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

import bench
import evaluate
import predict
import stitch
import synthetic
import train

COMMON = ["--arch", "unet", "--filters", "4", "--tile", "32", "--epochs", "1", "--batch-size", "4",
          "--device", "cpu"]


def _write(root, split, images, masks, x="x", y="y"):
    for sub in (x, y):
        os.makedirs(os.path.join(root, split, sub) if split else os.path.join(root, sub), exist_ok=True)
    for i, (image, mask) in enumerate(zip(images, masks)):
        Image.fromarray(image).save(os.path.join(root, split, x, f"s{i:02d}.png"))
        Image.fromarray(mask).save(os.path.join(root, split, y, f"s{i:02d}.png"))
    return root


def _slices(n, h, w, seed):
    """n synthetic EM slices of h x w: uint8 images and 0/255 masks."""
    x, y = synthetic.synthetic_em(n, h, w, seed=seed)
    return list(x), list(y * 255)


def _predicted_metrics(tmp_path, out, root):
    """predict.py on the run's checkpoint and the data set's test split (its masks from the folder)."""
    return predict.main([os.path.join(out, "best.pt"), root, "--masks", root, "--device", "cpu",
                         "--out", str(tmp_path / "pred"), "--overlays", "0"])


def test_a_12_bit_data_set_keeps_its_intensities_and_predict_applies_the_runs_map(tmp_path):
    images, masks = _slices(4, 64, 64, seed=3)
    deep = [(50 + im.astype(np.uint16) * 15).astype(np.uint16) for im in images]  # 50 .. 3875 of 65535
    root = str(tmp_path / "camera")
    _write(root, "train", deep[:3], masks[:3])
    _write(root, "test", deep[3:], masks[3:])
    out = str(tmp_path / "run")
    results = train.main(COMMON + ["--data", root, "--out", out])
    low, high = json.load(open(os.path.join(out, "run.json")))["intensity"]
    top = max(int(d.max()) for d in deep[:3])
    assert 50 <= low < 200 and top - 200 < high <= top  # the range the training slices use, not 0..65535
    metrics = _predicted_metrics(tmp_path, out, root)
    assert metrics["test_iou_f"] == results["test_iou_f"]  # the same map: the same probabilities
    assert metrics["test_iou_f_global"] == results["test_iou_f_global"]


def test_slices_of_different_sizes_train_per_slice_and_score_per_slice(tmp_path, capsys):
    train_x, train_y = _slices(2, 64, 64, seed=4)
    odd_x, odd_y = _slices(2, 48, 80, seed=5)
    test_x, test_y = _slices(2, 40, 56, seed=6)
    root = _write(str(tmp_path / "mixed"), "train", train_x + odd_x, train_y + odd_y)
    _write(root, "test", test_x[:1] + odd_x[:1], test_y[:1] + odd_y[:1])
    out = str(tmp_path / "run")
    results = train.main(COMMON + ["--data", root, "--out", out])
    printed = capsys.readouterr().out
    assert "train 4 slices: 2 of 64x64, 2 of 48x80, test 2 slices: 1 of 40x56, 1 of 48x80" in printed
    # 64x64 -> 4 tiles, 48x80 -> pad to 64x96 -> 6 tiles: 20 tiles, 2 held out for validation
    assert "18 training / 2 validation tiles of 32px" in printed
    metrics = _predicted_metrics(tmp_path, out, root)
    assert len(metrics["per_slice"]) == 2 and metrics["test_iou_f"] == results["test_iou_f"]


def test_a_flat_images_and_masks_folder_holds_out_its_last_slices_for_the_test(tmp_path, capsys):
    images, masks = _slices(5, 64, 64, seed=7)
    root = str(tmp_path / "mine")
    _write(root, "", images, masks, x="images", y="masks")
    out = str(tmp_path / "run")
    results = train.main(COMMON + ["--data", root, "--out", out])
    printed = capsys.readouterr().out
    assert "train 4 slices of 64x64, test 1 slices of 64x64; test: the last 1 of 5" in printed
    metrics = _predicted_metrics(tmp_path, out, root)
    assert [s["slice"] for s in metrics["per_slice"]] == [os.path.join(root, "images", "s04.png")]
    assert metrics["test_iou_f"] == results["test_iou_f"]


def test_a_montage_is_segmented_window_by_window_as_evaluation_does(tmp_path, monkeypatch):
    """A 200x260 slice stands in for a 20000x20000 montage: above FULL_PASS_PIXELS a CNN goes by windows,
    in predict.py as in the run's own evaluation (evaluate.predict_slice serves both)."""
    images, masks = _slices(3, 64, 64, seed=8)
    big_x, big_y = _slices(1, 200, 260, seed=9)
    root = _write(str(tmp_path / "montage"), "train", images, masks)
    _write(root, "test", big_x, big_y)
    for name, value in (("FULL_PASS_PIXELS", 64 * 64), ("CNN_WINDOW", 160), ("CNN_MARGIN", 48)):
        monkeypatch.setattr(stitch, name, value)  # 2048-px windows of a montage, scaled down
    calls = []
    windows = stitch.cnn_windows
    monkeypatch.setattr(stitch, "cnn_windows", lambda *a: calls.append(a) or windows(*a))
    out = str(tmp_path / "run")
    results = train.main(COMMON + ["--data", root, "--out", out])
    assert calls  # the run's evaluation went by windows
    metrics = _predicted_metrics(tmp_path, out, root)
    assert metrics["test_iou_f"] == results["test_iou_f"]


def test_training_masks_without_foreground_stop_with_one_line_unless_a_pretext_needs_none(tmp_path, capsys):
    images, _ = _slices(3, 64, 64, seed=10)
    empty = [np.zeros((64, 64), np.uint8)] * 3
    root = _write(str(tmp_path / "empty"), "train", images[:2], empty[:2])
    _write(root, "test", images[2:], empty[2:])
    with pytest.raises(SystemExit) as exit_info:
        train.main(COMMON + ["--data", root, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no foreground" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    assert train.main(COMMON + ["--data", root, "--out", str(tmp_path / "p"), "--pretext", "cutout"])


def test_bench_leaves_bf16_out_where_the_cpu_has_none(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(evaluate, "bf16_supported", lambda device: False)
    assert all("bf16" not in v for v in bench.default_variants(cpu)) and () in bench.default_variants(cpu)
    monkeypatch.setattr(evaluate, "bf16_supported", lambda device: True)
    assert any("bf16" in v for v in bench.default_variants(cpu))
