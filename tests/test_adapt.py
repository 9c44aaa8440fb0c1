"""adapt.py and --preprocess (App. A): the loss of Eq. 1 ignores unlabelled images, each stage trains
what it should (stage 2 lowers the reconstruction loss, stage 3 leaves the encoder bit for bit
unchanged), target masks are never needed for training, and the preprocessing reaches the model's input
(Table A.1 itself: tests/test_reproduce.py)."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

import adapt
import data
import degrade
import models
import presets
import synthetic
import train
import unet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--crops", "24", "--tile", "32", "--filters", "4", "--stage-epochs", "1", "3", "2", "--device", "cpu"]


def _write_set(root, domain, seed, masks=True, n_train=3, n_test=2, side=64):
    for split, n, s in (("train", n_train, seed), ("test", n_test, seed + 50)):
        x, y = synthetic.synthetic_em(n, side, side, seed=s, domain=domain)
        os.makedirs(os.path.join(root, split, "x"))
        if masks:
            os.makedirs(os.path.join(root, split, "y"))
        for i in range(n):
            Image.fromarray(x[i]).save(os.path.join(root, split, "x", f"{i:02d}.png"))
            if masks:
                Image.fromarray(y[i] * 255).save(os.path.join(root, split, "y", f"{i:02d}.png"))
    return str(root)


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    base = tmp_path_factory.mktemp("domains")
    return _write_set(base / "a", "a", 1), _write_set(base / "b", "b", 2)


@pytest.mark.ex12
def test_unlabelled_samples_add_no_bce_and_no_segmentation_gradient():
    torch.manual_seed(0)
    model = unet.AttentionYNet(filters=4)
    x = torch.rand(2, 1, 32, 32)
    # labelled, unlabelled
    y = torch.stack([(torch.rand(1, 32, 32) > 0.5).float(), torch.full((1, 32, 32), -1.0)])
    seg, rec = model(x)
    loss = train.compute_loss((seg, rec), x, y, alpha=0.3)
    bce_first = torch.nn.functional.binary_cross_entropy_with_logits(seg[:1], y[:1])
    expected = 0.3 * torch.nn.functional.mse_loss(rec, x) + 0.7 * bce_first / 2  # BCE 0 for the second sample
    torch.testing.assert_close(loss, expected)
    # with only the unlabelled sample, the segmentation head receives no gradient at all
    model.zero_grad()
    seg, rec = model(x[1:])
    train.compute_loss((seg, rec), x[1:], y[1:], alpha=0.3).backward()
    assert all(p.grad is None or not p.grad.any() for p in model.head.parameters())
    assert any(p.grad is not None and p.grad.any() for p in model.recon_head.parameters())


@pytest.mark.parametrize("norm", [[], ["--batch-norm", "--bn-momentum", "0.1"]], ids=["thesis", "batchnorm"])
def test_three_stages_freeze_the_encoder_and_learn_reconstruction(domains, tmp_path, monkeypatch, norm):
    source, target = domains
    snapshots = {}
    original_fit = train.fit

    def spy(model, train_ds, val_ds, cfg, device, out, *, meta, resume=False, label=""):
        before = {k: v.clone() for k, v in model.state_dict().items()}
        state = original_fit(model, train_ds, val_ds, cfg, device, out, meta=meta, resume=resume, label=label)
        snapshots[label] = (before, {k: v.clone() for k, v in model.state_dict().items()}, state)
        return state

    monkeypatch.setattr(train, "fit", spy)
    out = tmp_path / "run"
    results = adapt.main(["--source", source, "--target", target, "--out", str(out), *TINY, *norm])
    assert 0.0 <= results["test_iou_f"] <= 1.0
    assert sorted(os.listdir(out)) == ["results.json", "stage1-joint", "stage2-reconstruction",
                                       "stage3-segmentation"]
    # stage 2 (alpha = 1): the reconstruction loss falls
    history = snapshots["stage 2 reconstruction"][2]["history"]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    # stage 3: every encoder tensor is bit for bit unchanged (BatchNorm's running statistics too), the
    # decoders moved
    before, after, _ = snapshots["stage 3 segmentation"]
    encoder = [k for k in before if k.startswith("encoder.")]
    assert encoder and all(torch.equal(before[k], after[k]) for k in encoder)
    assert any("running_mean" in k for k in encoder) == bool(norm)
    if norm:  # stage 2 did update them, so an unfrozen BatchNorm would have shown up above
        before2, after2, _ = snapshots["stage 2 reconstruction"]
        assert any(not torch.equal(before2[k], after2[k]) for k in encoder if "running_mean" in k)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("decoder."))
    # the final checkpoint remembers its histogram matching, so prediction applies it too
    ckpt = models.load_checkpoint(str(out / "stage3-segmentation" / "best.pt"), "test")
    assert ckpt["run"]["preprocess"] == "hist_match" and len(ckpt["run"]["target_hist"]) == 256
    # each stage's loop ran with its row of STAGES (App. A)
    run = presets.RunConfig.from_dict(models.load_checkpoint(str(out / "stage1-joint" / "last.pt"),
                                                             "test")["run"])
    assert (run.fit.optimizer, run.fit.scheduler, run.fit.patience, run.fit.alpha) == ("sgd", "plateau", 7,
                                                                                        0.98)


def test_a_target_without_masks_trains_end_to_end_and_resume_reuses_stages(domains, tmp_path, capsys):
    source, _ = domains
    target = _write_set(tmp_path / "unlabelled", "b", 7, masks=False)
    out = tmp_path / "run"
    results = adapt.main(["--source", source, "--target", target, "--out", str(out), *TINY])
    assert results["test_iou_f"] is None and "no target score" in capsys.readouterr().out
    stamp = os.path.getmtime(out / "stage2-reconstruction" / "best.pt")
    adapt.main(["--source", source, "--target", target, "--out", str(out), "--resume", *TINY])
    assert "done earlier" in capsys.readouterr().out
    assert os.path.getmtime(out / "stage2-reconstruction" / "best.pt") == stamp


def test_hist_match_reaches_the_tensors_the_model_sees(domains, tmp_path, monkeypatch):
    source, target = domains
    seen = []
    build = models.build_model

    def build_and_watch(*a, **k):
        model = build(*a, **k)
        model.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0].detach().clone()))
        return model

    monkeypatch.setattr(models, "build_model", build_and_watch)
    train.main(["--arch", "unet", "--filters", "4", "--data", source, "--tile", "32", "--epochs", "1",
                "--batch-size", "64", "--no-augment", "--preprocess", "hist_match", "--match-to", target,
                "--device", "cpu", "--out", str(tmp_path / "run")])
    raw, _ = data.load_split(source, "train")
    hist = degrade.mean_histogram(data.load_split(target, "train", masks=False)[0])
    by_hand = data.extract_tiles(np.stack([degrade.match_histogram(im, hist, fix_zero_peak=True)
                                           for im in raw]), 32)
    batch = seen[1][:, 0].numpy()  # the first training batch (seen[0] is the validation pass before training)
    expected = {tile.tobytes() for tile in by_hand.astype(np.float32) / 255.0}
    assert all(tile.tobytes() in expected for tile in batch)
    unmatched = {tile.tobytes() for tile in data.extract_tiles(raw, 32).astype(np.float32) / 255.0}
    assert not any(tile.tobytes() in unmatched for tile in batch)


def test_clahe_preprocessing_is_applied_to_test_slices_as_well(domains, tmp_path):
    source, _ = domains
    run = presets.make_config("unet", data=source, tile=32, preprocess="clahe")
    _, slices, _ = train.load_slices(run)
    raw_test, _ = data.load_split(source, "test")
    np.testing.assert_array_equal(slices["test"][0], np.stack([degrade.clahe(im) for im in raw_test]))


def test_bad_adapt_arguments_exit_2(tmp_path, capsys):
    for argv, expected in ((["--source", "x"], "--target"), ([], "--source"),
                           (["--source", str(tmp_path / "none"), "--target", str(tmp_path / "none"),
                             "--out", str(tmp_path / "o")], "not found")):
        with pytest.raises(SystemExit) as exit_info:
            adapt.main(argv)
        assert exit_info.value.code == 2 and expected in capsys.readouterr().err
