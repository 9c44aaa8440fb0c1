"""The thesis's data sets as they are distributed (§4.1.1-4.1.2): both folder layouts, pairing in natural
name order with slice numbers compared, mask levels read as half the full scale, and the data report.

The folders are tiny and built here, named and encoded like the Lucchi++ and Kasthuri++ zips: images
`mask%04d.png` in Train_In/Test_In, labels `%d.png` (numbers not zero-padded) in Train_Out/Test_Out,
RGBA test labels, and Kasthuri++'s value 2 for the empty area outside the imaged region. Every image and
every mask encodes its own slice index, so a test can tell whether each slice met its own mask.
"""
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import data
import imagefiles
import predict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
H, W, BITS = 24, 32, 5  # masks carry their index in the first BITS pixels of row 0


def image_of(i):
    """(H, W) uint8 whose pixel (0, 0) is the slice index, the rest a seeded texture."""
    image = np.random.default_rng(i).integers(40, 200, size=(H, W)).astype(np.uint8)
    image[0, 0] = i
    return image


def mask_of(i, border=False):
    """(H, W) 0/255 mask: bit k of i in pixel (0, k), a blob below; with border, 2 in the last 3 columns."""
    mask = np.zeros((H, W), np.uint8)
    mask[0, :BITS] = [255 * ((i >> k) & 1) for k in range(BITS)]
    mask[8:16, 6:6 + 1 + i % 10] = 255
    if border:
        mask[:, -3:] = 2  # Kasthuri++: the empty area outside the imaged region
    return mask


def index_of_mask(mask01):
    return sum(int(mask01[0, k]) << k for k in range(BITS))


def rgba(mask):
    return np.dstack([mask, mask, mask, np.full_like(mask, 255)])  # (H, W, 4) uint8


def write_zip_like(root, n_train=12, n_test=11, layout="zip", border=False):
    """A Lucchi++-style folder; layout "zip" (Train_In/...) or "ours" (train/x/...)."""
    folders = {"zip": {"train": ("Train_In", "Train_Out"), "test": ("Test_In", "Test_Out")},
               "ours": {"train": ("train/x", "train/y"), "test": ("test/x", "test/y")}}[layout]
    for split, n in (("train", n_train), ("test", n_test)):
        x_dir, y_dir = (os.path.join(root, f) for f in folders[split])
        os.makedirs(x_dir), os.makedirs(y_dir)
        for i in range(n):
            Image.fromarray(image_of(i)).save(os.path.join(x_dir, f"mask{i:04d}.png"))
            mask = mask_of(i, border)
            Image.fromarray(rgba(mask) if split == "test" else mask).save(os.path.join(y_dir, f"{i}.png"))
    return root


def assert_own_masks(x, y):
    for k in range(len(x)):
        assert index_of_mask(y[k]) == x[k, 0, 0], f"slice {x[k, 0, 0]} got the mask of {index_of_mask(y[k])}"


@pytest.mark.parametrize("layout", ["zip", "ours"])
def test_every_slice_meets_its_own_mask_in_both_layouts(tmp_path, layout):
    root = write_zip_like(str(tmp_path / "Lucchi++"), layout=layout)
    for split, n in (("train", 12), ("test", 11)):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            x, y = data.load_split(root, split)
        assert x.shape == (n, H, W) and list(x[:, 0, 0]) == list(range(n))  # natural order: 2 before 10
        assert_own_masks(x, y)
        converted = [str(w.message) for w in caught]
        assert (split == "test") == any("RGBA masks read from their colour channels" in m for m in converted)


def test_plain_sorting_would_have_paired_other_slices(tmp_path):
    """The failure this guards against: sorted() puts '10.png' before '2.png'."""
    root = write_zip_like(str(tmp_path / "Lucchi++"))
    plain = sorted(os.listdir(os.path.join(root, "Train_Out")))
    natural = sorted(plain, key=imagefiles.natural_key)
    assert plain[:3] == ["0.png", "1.png", "10.png"] and natural[:3] == ["0.png", "1.png", "2.png"]


def test_folder_names_in_any_case_and_a_hint_for_the_folder_above(tmp_path):
    root = write_zip_like(str(tmp_path / "Lucchi++"))
    os.rename(os.path.join(root, "Train_In"), os.path.join(root, "train_in"))
    x, y = data.load_split(root, "train")
    assert_own_masks(x, y)
    with pytest.raises(data.DataError, match=r"Lucchi\+\+ does, pass that folder"):
        data.load_split(str(tmp_path), "train")


def test_kasthuri_border_value_2_is_background_with_one_warning(tmp_path):
    root = write_zip_like(str(tmp_path / "Kasthuri++"), n_train=3, n_test=2, border=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, y = data.load_split(root, "train")
    assert not y[:, :, -3:].any(), "the empty border (value 2) became mitochondria"
    assert_own_masks(x, y)
    np.testing.assert_array_equal(y[:, :, :-3], np.stack([mask_of(i)[:, :-3] // 255 for i in range(3)]))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "Train_Out" in messages[0] and "besides 0 and 255 (2)" in messages[0] and "2 (" in messages[0]
    assert ">= 128 of 255" in messages[0]


@pytest.mark.parametrize("scale, extra", [(1, None), (255, None), (255, [1, 37, 127, 128, 254])])
def test_mask_levels_half_the_full_scale(tmp_path, scale, extra):
    """0/1 and 0/255 masks load bit for bit as any-non-zero did; other values follow >= half scale."""
    rng = np.random.default_rng(scale)
    levels = np.array([0, scale] + (extra or []), np.uint8)
    raw = rng.choice(levels, size=(2, H, W))
    for i in range(2):
        (os.makedirs(tmp_path / "test" / "x", exist_ok=True),
         os.makedirs(tmp_path / "test" / "y", exist_ok=True))
        Image.fromarray(image_of(i)).save(tmp_path / "test" / "x" / f"{i}.png")
        Image.fromarray(raw[i]).save(tmp_path / "test" / "y" / f"{i}.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, y = data.load_split(str(tmp_path), "test")
    if extra is None:
        np.testing.assert_array_equal(y, (raw != 0).astype(np.uint8))  # as the any-non-zero rule read them
        assert not caught
    else:
        np.testing.assert_array_equal(y, (raw >= 128).astype(np.uint8))
        assert len(caught) == 1 and "1, 37, 127, 128, 254" in str(caught[0].message)


def test_sixteen_bit_and_one_bit_masks_keep_their_levels(tmp_path):
    deep = np.zeros((H, W), np.uint16)
    deep[3:9, 4:12] = 65535
    deep[10, 10] = 1000  # below half of 65535
    for sub in ("x", "y"):
        os.makedirs(tmp_path / "test" / sub)
    Image.fromarray(image_of(0)).save(tmp_path / "test" / "x" / "a.png")
    Image.fromarray(deep).save(tmp_path / "test" / "y" / "a.png")
    Image.fromarray(image_of(1)).save(tmp_path / "test" / "x" / "b.png")
    Image.fromarray(mask_of(1) > 0).save(tmp_path / "test" / "y" / "b.png")  # 1-bit
    with pytest.warns(UserWarning, match="32768 of 65535"):
        _, y = data.load_split(str(tmp_path), "test")
    np.testing.assert_array_equal(y[0], (deep == 65535).astype(np.uint8))
    np.testing.assert_array_equal(y[1], (mask_of(1) > 0).astype(np.uint8))


def test_slice_numbers_of_names():
    assert imagefiles.slice_numbers(["mask0000.png", "mask0002.png", "mask0010.png"]) == [0, 2, 10]
    # a date and a version that every name shares are not the slice number
    assert imagefiles.slice_numbers(["2021-03-04_s5_v2.tif", "2021-03-04_s6_v2.tif"]) == [5, 6]
    assert imagefiles.slice_numbers(["s3.png"]) == [3]  # one file: its last number
    assert imagefiles.slice_numbers(["a.png", "b.png"]) == [None, None]  # no numbers
    assert imagefiles.slice_numbers(["s5_v2.png", "s6.png"]) == [None, None]  # counts differ: cannot tell


def test_names_without_numbers_pair_in_name_order(tmp_path):
    for sub in ("x", "y"):
        os.makedirs(tmp_path / "test" / sub)
    for k, name in enumerate(["beta", "alpha", "gamma"]):
        Image.fromarray(image_of(k)).save(tmp_path / "test" / "x" / f"{name}.png")
        Image.fromarray(mask_of(k)).save(tmp_path / "test" / "y" / f"{name}_label.png")
    s = data.read_split(str(tmp_path), "test")
    assert not s.numbers_checked
    assert list(s.images[:, 0, 0]) == [1, 0, 2]  # alpha, beta, gamma
    assert_own_masks(s.images, s.masks)


def test_natural_order_leaves_zero_padded_names_paired_as_before(tmp_path):
    """Nothing a user has changes meaning: where plain and natural orders agree, so do the pairs."""
    for sub in ("x", "y"):
        os.makedirs(tmp_path / "test" / sub)
    order = np.random.default_rng(0).permutation(12)
    for k in order:
        Image.fromarray(image_of(k)).save(tmp_path / "test" / "x" / f"slice_{k:02d}.tif")
        Image.fromarray(mask_of(k)).save(tmp_path / "test" / "y" / f"label_{k:02d}.png")
    names = os.listdir(tmp_path / "test" / "x")
    assert sorted(names) == sorted(names, key=imagefiles.natural_key)
    s = data.read_split(str(tmp_path), "test")
    assert s.image_names == [str(tmp_path / "test" / "x" / n) for n in sorted(names)]
    assert s.numbers_checked
    assert_own_masks(s.images, s.masks)


@pytest.mark.parametrize("case", ["numbers", "count", "single"])
def test_pairs_whose_numbers_disagree_are_refused(tmp_path, case):
    root = write_zip_like(str(tmp_path / "set"), n_train=4, n_test=2)
    out_dir = os.path.join(root, "Train_Out")
    if case == "numbers":  # 3.png renamed 7.png: the fourth image would meet another slice's mask
        os.rename(os.path.join(out_dir, "3.png"), os.path.join(out_dir, "7.png"))
        expected = ["mask0003.png", "7.png", "slice numbers 3 and 7"]
    elif case == "count":
        os.remove(os.path.join(out_dir, "1.png"))
        expected = ["4 images", "3 masks", "mask0001.png has none", "slice number 1"]
    else:  # one slice per folder, s3 against s4
        for folder, name in (("Test_In", "s3.png"), ("Test_Out", "s4.png")):
            for old in os.listdir(os.path.join(root, folder)):
                os.remove(os.path.join(root, folder, old))
            Image.fromarray(image_of(3) if folder == "Test_In" else mask_of(3)).save(
                os.path.join(root, folder, name))
        expected = ["s3.png", "s4.png", "slice numbers 3 and 4"]
    with pytest.raises(data.DataError) as info:
        data.load_split(root, "test" if case == "single" else "train")
    message = str(info.value)
    assert "\n" not in message and all(e in message for e in expected), message


def _run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_mismatched_numbers_stop_train_py_before_anything_is_written(tmp_path):
    root = write_zip_like(str(tmp_path / "set"), n_train=4, n_test=2)
    os.rename(os.path.join(root, "Test_Out", "1.png"), os.path.join(root, "Test_Out", "5.png"))
    out = tmp_path / "run"
    done = _run([os.path.join(ROOT, "train.py"), "--data", root, "--out", str(out), "--tile", "16",
                 "--epochs", "1", "--device", "cpu"], cwd=str(tmp_path))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in done.stderr, done.stderr
    assert "mask0001.png" in lines[0] and "5.png" in lines[0]
    assert not out.exists() and not (tmp_path / "runs").exists()
    report = _run([os.path.join(ROOT, "data.py"), root], cwd=str(tmp_path))
    assert (report.returncode == 2 and report.stderr.count("\n") == 1
            and "slice numbers 1 and 5" in report.stderr)
    assert "train: 4 slices" in report.stdout and "ok" not in report.stdout.split("\n")[-2]


def test_data_report_names_what_it_found(tmp_path):
    root = write_zip_like(str(tmp_path / "Kasthuri++"), n_train=12, n_test=3, border=True)
    done = _run([os.path.join(ROOT, "data.py"), root], cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "layout Train_In, Train_Out, Test_In, Test_Out" in text
    assert f"train: 12 slices of {H}x{W}" in text and f"test: 3 slices of {H}x{W}" in text
    assert "images 8-bit grey (L)" in text and "masks 8-bit RGBA (RGBA)" in text
    assert "RGBA masks read from their colour channels" in text
    assert "besides 0 and 255 (2)" in text and "2 (" in text and "is background" in text
    share = 100 * np.mean([mask_of(i, True) == 255 for i in range(12)])
    assert f"foreground: {share:.2f}% of the pixels" in text
    assert "Train_In/mask0000.png + Train_Out/0.png; Train_In/mask0001.png + Train_Out/1.png; " \
           "Train_In/mask0002.png + Train_Out/2.png" in text
    assert "slice numbers agree" in text
    assert text.strip().splitlines()[-1].startswith("ok: 12 train and 3 test slices")


VNC = os.path.join(ROOT, "..", "shared", "data", "vnc")


@pytest.mark.skipif(not os.path.isdir(VNC), reason="the VNC ssTEM sample is not beside this clone")
def test_vnc_sample_loads_as_before_but_for_its_antialiased_edge_pixels():
    """Images, names and pairs as the plain sort read them; masks as any-non-zero did wherever the
    value is one of the two levels (all but 194 anti-aliased edge pixels of 20.97 million)."""
    for split in ("train", "test"):
        s = data.read_split(VNC, split)
        x_dir, y_dir = (os.path.join(VNC, split, sub) for sub in ("x", "y"))
        assert s.image_names == [os.path.join(x_dir, n) for n in sorted(os.listdir(x_dir))]
        raw = np.stack([np.asarray(Image.open(os.path.join(y_dir, n))).astype(np.uint8)
                        for n in sorted(os.listdir(y_dir))])
        np.testing.assert_array_equal(s.images, np.stack([np.asarray(Image.open(p)) for p in s.image_names]))
        two_levels = (raw == 0) | (raw == raw.max(axis=(1, 2), keepdims=True))
        np.testing.assert_array_equal(s.masks[two_levels], (raw[two_levels] != 0).astype(np.uint8))
        np.testing.assert_array_equal(s.masks[~two_levels], (raw[~two_levels] >= 128).astype(np.uint8))
        assert (~two_levels).mean() < 1e-4


def test_adapt_takes_source_and_target_as_unzipped(tmp_path, capsys):
    """adapt.py --source/--target in the zips' layout: the target's training images unlabelled, its test
    masks (RGBA, natural order) for the score."""
    import adapt

    source = write_zip_like(str(tmp_path / "Lucchi++"), n_train=3, n_test=2)
    target = write_zip_like(str(tmp_path / "Kasthuri++"), n_train=3, n_test=2, border=True)
    results = adapt.main(["--source", source, "--target", target, "--out", str(tmp_path / "run"),
                          "--crops", "12", "--tile", "16", "--filters", "2", "--stage-epochs", "1", "1", "1",
                          "--device", "cpu"])
    out = capsys.readouterr().out
    assert "layout Train_In, Train_Out, Test_In, Test_Out" in out and "3 training slices, unlabelled" in out
    assert results["test_iou_f"] is not None and 0.0 <= results["test_iou_f"] <= 1.0


def test_a_checkpoint_is_scored_on_another_data_set_as_unzipped(tmp_path):
    """Table A.1 scores a source-trained network on the target's test split; only that split is read."""
    import train

    source = write_zip_like(str(tmp_path / "Lucchi++"), n_train=4, n_test=2)
    target = write_zip_like(str(tmp_path / "Kasthuri++"), n_train=1, n_test=3, border=True)
    train_in = os.path.join(target, "Train_In")
    for name in os.listdir(train_in):  # a target whose training images are unreadable is still scored
        open(os.path.join(train_in, name), "wb").write(b"not an image")
    train.main(["--arch", "unet", "--filters", "2", "--data", source, "--tile", "16", "--epochs", "1",
                "--device", "cpu", "--out", str(tmp_path / "run")])
    metrics = predict.score_checkpoint(str(tmp_path / "run" / "best.pt"), target, torch.device("cpu"))
    assert len(metrics["per_slice"]) == 3 and 0.0 <= metrics["test_iou_f"] <= 1.0
