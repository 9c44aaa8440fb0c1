"""predict.py: prediction reproduces the run's own evaluation bit for bit, stacks in give stacks out,
bad input and foreign checkpoints are refused before any work, and the attention maps are what
Eq. 2.1 and Abnar & Zuidema's rollout say they are."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import attention
import synthetic
import evaluate
import predict
import train

TINY = ["--filters", "4", "--tile", "32", "--image-side", "64", "--train-images", "4", "--test-images", "3",
        "--batch-size", "4", "--epochs", "1", "--device", "cpu"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny UNETR-2D and one tiny U-Net run, with the probability maps their evaluation computed."""
    found = {}
    for arch in ("unetr2d", "unet"):
        out = tmp_path_factory.mktemp(arch) / "run"
        seen = []
        original = evaluate.predict_slices

        def spy(*a, **k):
            probs = original(*a, **k)
            seen.append(probs)
            return probs

        evaluate.predict_slices = spy
        try:
            results = train.main(["--arch", arch, *TINY, "--out", str(out)])
        finally:
            evaluate.predict_slices = original
        found[arch] = {"out": out, "results": results, "probs": seen[-1]}
    test_x, test_y = synthetic.synthetic_em(3, 64, 64, seed=synthetic.TRAIN_SEED + 1)
    folder = tmp_path_factory.mktemp("slices")
    for i in range(3):
        Image.fromarray(test_x[i]).save(folder / f"slice_{i:03d}.tif")
    return found, folder, test_x, test_y


def _write_masks(folder, test_y):
    os.makedirs(folder, exist_ok=True)
    for i, m in enumerate(test_y):
        Image.fromarray(m * 255).save(os.path.join(folder, f"m_{i}.png"))


@pytest.mark.parametrize("arch", ["unetr2d", "unet"])
def test_prediction_reproduces_the_runs_own_evaluation_bit_for_bit(runs, tmp_path, arch, capsys):
    found, folder, test_x, test_y = runs
    run = found[arch]
    masks_dir = tmp_path / "truth"
    _write_masks(masks_dir, test_y)
    inputs = tmp_path / "in"
    inputs.mkdir()
    for i in range(3):
        Image.fromarray(test_x[i]).save(inputs / f"slice_{i:03d}.tif")
    out = tmp_path / "pred"
    result = predict.main([str(run["out"] / "best.pt"), str(inputs), "--out", str(out), "--masks",
                           str(masks_dir), "--probabilities", "--device", "cpu"])
    for i, prob in enumerate(run["probs"]):
        written = np.asarray(Image.open(out / f"slice_{i:03d}_mask.png"))
        np.testing.assert_array_equal(written, (prob > 0.5).astype(np.uint8) * 255)
        np.testing.assert_array_equal(result["probabilities"][i], prob)
        assert (np.abs(np.asarray(Image.open(out / f"slice_{i:03d}_prob.png")) / 255.0 - prob).max()
                <= 0.5 / 255 + 1e-6)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_iou_f"] == run["results"]["test_iou_f"]
    assert metrics["test_iou_f_global"] == run["results"]["test_iou_f_global"]
    assert len(metrics["per_slice"]) == 3 and metrics["per_slice"][0]["slice"].endswith("slice_000.tif")
    assert "IoU_F" in capsys.readouterr().out
    assert (out / "slice_000_overlay.png").exists() and not (out / "slice_003_overlay.png").exists()


def test_masks_of_a_data_set_folder_as_unzipped_pair_in_natural_order(runs, tmp_path, capsys):
    """--masks Lucchi++ (Train_In/Test_In, labels %d.png, RGBA test labels) with INPUT its Test_In, or the
    data-set folder itself as INPUT: the same scores as the run's own evaluation."""
    found, _, test_x, test_y = runs
    root = tmp_path / "Lucchi++"
    for sub in ("Train_In", "Train_Out", "Test_In", "Test_Out"):
        (root / sub).mkdir(parents=True)
    order = [2, 0, 1]  # written out of order; natural order must restore 0, 1, 2
    for i in order:
        Image.fromarray(test_x[i]).save(root / "Test_In" / f"mask{i:04d}.png")
        mask = test_y[i] * 255
        Image.fromarray(np.dstack([mask, mask, mask, np.full_like(mask, 255)])).save(
            root / "Test_Out" / f"{i}.png")
    ckpt = str(found["unet"]["out"] / "best.pt")
    for k, argv in enumerate(([str(root / "Test_In"), "--masks", str(root)],
                              [str(root), "--masks", str(root)])):
        result = predict.main([ckpt, *argv, "--out", str(tmp_path / f"out{k}"), "--device", "cpu"])
        assert result["test_iou_f"] == found["unet"]["results"]["test_iou_f"]
        assert [s["slice"].rsplit("/", 1)[-1] for s in result["per_slice"]] == ["mask0000.png",
                                                                              "mask0001.png",
                                                                              "mask0002.png"]
    os.rename(root / "Test_Out" / "1.png", root / "Test_Out" / "7.png")
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        predict.main([ckpt, str(root / "Test_In"), "--masks", str(root), "--out", str(tmp_path / "o"),
                      "--device", "cpu"])
    assert exit_info.value.code == 2 and "slice numbers 1 and 2" in capsys.readouterr().err  # 0, 2, 7 now
    assert not (tmp_path / "o").exists()


def test_a_three_page_stack_gives_a_three_page_mask_stack(runs, tmp_path):
    found, _, test_x, test_y = runs
    stack = tmp_path / "stack.tif"
    pages = [Image.fromarray(x) for x in test_x]
    pages[0].save(stack, save_all=True, append_images=pages[1:])
    truth = tmp_path / "truth.tif"
    masks = [Image.fromarray(y * 255) for y in test_y]
    masks[0].save(truth, save_all=True, append_images=masks[1:])
    out = tmp_path / "pred"
    result = predict.main([str(found["unetr2d"]["out"] / "best.pt"), str(stack), "--out", str(out),
                           "--masks", str(truth), "--device", "cpu"])
    with Image.open(out / "stack_mask.tif") as written:
        assert written.n_frames == 3
        for k in range(3):
            written.seek(k)
            page = np.asarray(written)
            assert page.shape == test_x[k].shape
            np.testing.assert_array_equal(page, (found["unetr2d"]["probs"][k] > 0.5).astype(np.uint8) * 255)
    assert result["test_iou_f"] == found["unetr2d"]["results"]["test_iou_f"]


def test_existing_masks_are_replaced_only_with_overwrite(runs, tmp_path, capsys):
    found, folder, _, _ = runs
    ckpt = str(found["unet"]["out"] / "best.pt")
    out = tmp_path / "pred"
    out.mkdir()
    (out / "slice_001_mask.png").write_bytes(b"the user's own file")
    with pytest.raises(SystemExit) as exit_info:
        predict.main([ckpt, str(folder / "slice_001.tif"), "--out", str(out), "--device", "cpu"])
    assert exit_info.value.code == 2
    assert "already exists" in capsys.readouterr().err
    assert sorted(os.listdir(out)) == ["slice_001_mask.png"]
    assert (out / "slice_001_mask.png").read_bytes() == b"the user's own file"
    predict.main([ckpt, str(folder / "slice_001.tif"), "--out", str(out), "--device", "cpu", "--overwrite"])
    assert np.asarray(Image.open(out / "slice_001_mask.png")).max() in (0, 255)


class _RunsCode:
    """A pickled object whose unpickling calls os.system: what a malicious checkpoint would hold."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _bad_checkpoints(tmp_path, good):
    ckpt = torch.load(good, weights_only=True)
    cases = {}
    cases["missing.pt"] = ("no such file", None)
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    cases["garbage.pt"] = ("not a checkpoint written by train.py", None)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    cases["foreign.pt"] = ("no model, config, run inside", None)
    no_size = {**ckpt, "config": {k: v for k, v in ckpt["config"].items() if k != "size"}}
    torch.save(no_size, tmp_path / "no_size.pt")
    cases["no_size.pt"] = ("no config.size inside", None)
    wrong = {**ckpt, "model": dict(ckpt["model"])}
    wrong["model"][next(iter(wrong["model"]))] = torch.zeros(7, 7, 7)
    torch.save(wrong, tmp_path / "wrong_tensors.pt")
    cases["wrong_tensors.pt"] = ("tensors do not fit a unet", None)
    marker = tmp_path / "code_ran"
    torch.save({**ckpt, "payload": _RunsCode(marker)}, tmp_path / "evil.pt")
    cases["evil.pt"] = ("refused, the file holds Python objects", marker)
    return cases


def test_bad_checkpoints_are_refused_with_one_line_and_nothing_written(runs, tmp_path, capsys):
    found, folder, _, _ = runs
    for name, (expected, marker) in _bad_checkpoints(tmp_path, found["unet"]["out"] / "best.pt").items():
        out = tmp_path / f"out-{name}"
        with pytest.raises(SystemExit) as exit_info:
            predict.main([str(tmp_path / name), str(folder), "--out", str(out), "--device", "cpu"])
        err = capsys.readouterr().err
        assert exit_info.value.code == 2, name
        assert expected in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not out.exists(), name
        if marker is not None:
            assert not marker.exists(), "unpickling the checkpoint ran code"


def test_training_refuses_a_pickled_object_in_every_checkpoint_flag(runs, tmp_path, capsys):
    found, _, _, _ = runs
    cases = _bad_checkpoints(tmp_path, found["unet"]["out"] / "best.pt")
    marker = cases["evil.pt"][1]
    evil = str(tmp_path / "evil.pt")
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--arch", "unet", *TINY, "--init-from", evil, "--out", str(tmp_path / "i")])
    assert exit_info.value.code == 2
    assert "refused, the file holds Python objects" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()  # refused before the run folder was made
    resumed = tmp_path / "resumed"
    train.main(["--arch", "unet", *TINY, "--epochs", "0", "--out", str(resumed)])
    torch.save({**torch.load(resumed / "last.pt", weights_only=True), "payload": _RunsCode(marker)},
               resumed / "last.pt")
    (resumed / "results.json").unlink()  # an unfinished run: --resume must load last.pt
    with pytest.raises(SystemExit):
        train.main(["--out", str(resumed), "--resume"])
    assert "refused" in capsys.readouterr().err
    assert not marker.exists()


def test_bad_inputs_exit_2_before_any_work(runs, tmp_path):
    found, folder, _, _ = runs
    ckpt = str(found["unet"]["out"] / "best.pt")
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken.png").write_bytes(b"\x89PNG but not really")
    cases = {"nothing_here": "no such file or folder", "empty": "no image files",
             "broken.png": "cannot read this file as an image"}
    for name, expected in cases.items():
        out = tmp_path / f"out-{name}"
        proc = subprocess.run([sys.executable, os.path.join(ROOT, "predict.py"), ckpt, str(tmp_path / name),
                               "--out", str(out), "--device", "cpu"], capture_output=True, text=True)
        assert proc.returncode == 2, (name, proc.stderr)
        assert expected in proc.stderr and "Traceback" not in proc.stderr, (name, proc.stderr)
        assert len(proc.stderr.strip().splitlines()) == 1 and not out.exists(), name
    wrong_masks = tmp_path / "two_masks"
    wrong_masks.mkdir()
    for i in range(2):
        Image.fromarray(np.zeros((64, 64), np.uint8)).save(wrong_masks / f"m{i}.png")
    with pytest.raises(SystemExit):
        predict.main([ckpt, str(folder / "slice_000.tif"), "--masks", str(wrong_masks),
                      "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert not (tmp_path / "o").exists()


def test_slices_smaller_than_the_window_and_colour_images_are_predicted(runs, tmp_path):
    found, _, test_x, _ = runs
    small = tmp_path / "small.png"
    Image.fromarray(np.stack([test_x[0][:20, :27]] * 3, axis=-1)).save(small)  # RGB, smaller than 32x32
    out = tmp_path / "pred"
    with pytest.warns(UserWarning, match="converted to grey"):
        predict.main([str(found["unetr2d"]["out"] / "best.pt"), str(small), "--out", str(out), "--device",
                      "cpu"])
    assert np.asarray(Image.open(out / "small_mask.png")).shape == (20, 27)


def test_attention_rows_sum_to_one_and_rollout_matches_a_float64_loop(runs, tmp_path):
    found, folder, _, _ = runs
    result = predict.main([str(found["unetr2d"]["out"] / "best.pt"), str(folder / "slice_000.tif"),
                           "--attention", "--out", str(tmp_path / "att"), "--query-patch", "0,1",
                           "--device", "cpu"])
    assert len(result["maps"]) == 4 and all(os.path.exists(p) for p in result["paths"])
    for weights in result["maps"]:
        assert weights.shape == (1, 4, 4, 4)  # (B, h, N, N): a 32-px window has 2x2 patches
        torch.testing.assert_close(weights.sum(-1), torch.ones(1, 4, 4))
    expected = np.eye(4)
    for weights in result["maps"]:
        mixed = 0.5 * weights[0].double().numpy().mean(0) + 0.5 * np.eye(4)
        expected = (mixed / mixed.sum(1, keepdims=True)) @ expected
    np.testing.assert_allclose(result["rollout"][0].double().numpy(), expected, atol=1e-6)
    assert Image.open(result["paths"][0]).size[0] == 2 * (32 + 4)  # 4 heads in a 2x2 grid of windows


def test_rollout_of_identity_attention_is_the_identity(runs, tmp_path, monkeypatch):
    found, folder, _, _ = runs

    def identity_attention(q, k, v, dropout=0.0, training=False):
        B, h, N, _ = q.shape
        return v, torch.eye(N).expand(B, h, N, N)

    monkeypatch.setattr(attention, "scaled_dot_product_attention", identity_attention)
    result = predict.main([str(found["unetr2d"]["out"] / "best.pt"), str(folder / "slice_000.tif"),
                           "--attention", "--out", str(tmp_path / "att"), "--device", "cpu"])
    torch.testing.assert_close(result["rollout"][0], torch.eye(4))


def test_attention_on_a_cnn_checkpoint_is_refused(runs, tmp_path, capsys):
    found, folder, _, _ = runs
    with pytest.raises(SystemExit) as exit_info:
        predict.main([str(found["unet"]["out"] / "best.pt"), str(folder / "slice_000.tif"), "--attention",
                      "--out", str(tmp_path / "att")])
    assert exit_info.value.code == 2 and "need a UNETR-2D or YNETR-2D" in capsys.readouterr().err
    assert not (tmp_path / "att").exists()
