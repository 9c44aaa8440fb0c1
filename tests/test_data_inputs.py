"""Data as users bring it (data.py, imagefiles.py): whole montages, 12-bit cameras, label images, masks
without foreground, slices of different sizes, folders without a test split. Generated files only; a small
file stands in for a montage where only Pillow's guard sees the size."""
import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import data
import imagefiles
import stitch


def _save(path, array):
    os.makedirs(os.path.dirname(str(path)), exist_ok=True)
    Image.fromarray(array).save(str(path))


def _write_split(root, split, images, masks=None, x="x", y="y", ext=".png"):
    """Slices (and masks, saved as they are) as files s00.png ... of root/split/x and root/split/y."""
    for i, image in enumerate(images):
        _save(os.path.join(root, split, x, f"s{i:02d}{ext}"), image)
        if masks is not None:
            _save(os.path.join(root, split, y, f"s{i:02d}{ext}"), masks[i])
    return str(root)


def _blobs(n=2, h=24, w=32, seed=0):
    """(n, H, W) uint8 images and 0/255 masks."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    masks[:, 4:12, 6:20] = 255
    return images, masks


def _report(root):
    lines = []
    data.report(str(root), out=lines.append)
    return "\n".join(lines)


def _one_line_error(call, *args, **kwargs):
    with pytest.raises(data.DataError) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    return message


# ---------------------------------------------------------------- large slices

def test_the_bomb_guard_is_lifted_around_our_reads_only(tmp_path, monkeypatch):
    """A 24x32 file with Pillow's limit lowered to 100 pixels stands in for a 20000x20000 montage."""
    images, masks = _blobs(n=2)
    root = _write_split(str(tmp_path), "test", images, masks)
    _write_split(root, "train", images, masks)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    path = os.path.join(root, "test", "x", "s00.png")
    with pytest.raises(Image.DecompressionBombError):       # 768 pixels > 2 x 100: Pillow alone refuses
        Image.open(path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                      # not even a DecompressionBombWarning
        part = data.read_split(root, "test")
        (_, pages), = imagefiles.read_files([path])
    np.testing.assert_array_equal(part.images, images)
    np.testing.assert_array_equal(pages[0], images[0])
    assert Image.MAX_IMAGE_PIXELS == 100                   # the caller's limit, restored
    assert "test: 2 slices of 24x32" in _report(root)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_a_slice_that_would_not_fit_in_memory_is_refused_with_one_line(tmp_path, monkeypatch):
    images, _ = _blobs(n=2)
    _save(tmp_path / "test" / "x" / "s00.tif", images[0].astype(np.uint16) * 16)  # 16-bit: 17 bytes a pixel
    _save(tmp_path / "test" / "x" / "s01.tif", images[1].astype(np.uint16) * 16)
    _save(tmp_path / "eight.png", images[0])                                        # 8-bit: 15 bytes a pixel
    need_8, need_16 = 768 * (15 + 1024), 768 * (17 + 1024)  # the slice's arrays, the network's memory
    assert imagefiles.memory_needed(20000 * 20000, "L") == 20000 ** 2 * 15 + 2048 ** 2 * 1024
    assert imagefiles.NETWORK_PIXELS == stitch.FULL_PASS_PIXELS  # the part a CNN sees at once
    assert imagefiles.bytes_per_pixel("L") == 15 and imagefiles.bytes_per_pixel("I;16B") == 17
    assert imagefiles.bytes_per_pixel("RGB") == 21 and imagefiles.bytes_per_pixel("1") == 15
    monkeypatch.setattr(imagefiles, "available_memory", lambda: need_16 - 1)
    message = _one_line_error(data.read_split, str(tmp_path), "test", masks=False)
    assert "s00.tif" in message and "24x32" in message and "768 pixels" in message
    assert "17 bytes per pixel" in message and "GiB are available" in message and "crop" in message
    monkeypatch.setattr(imagefiles, "available_memory", lambda: need_16)  # just enough
    assert len(data.read_split(str(tmp_path), "test", masks=False).images) == 2
    monkeypatch.setattr(imagefiles, "available_memory", lambda: need_8 - 1)
    assert "eight.png" in _one_line_error(imagefiles.read_files, [str(tmp_path / "eight.png")])
    monkeypatch.setattr(imagefiles, "available_memory", lambda: need_8)
    assert len(imagefiles.read_files([str(tmp_path / "eight.png")])) == 1
    monkeypatch.setattr(imagefiles, "available_memory", lambda: None)  # no /proc/meminfo: no check
    assert len(data.read_split(str(tmp_path), "test", masks=False).images) == 2


def test_available_memory_is_memavailable_of_proc_meminfo():
    if not os.path.exists("/proc/meminfo"):
        assert imagefiles.available_memory() is None
        return
    with open("/proc/meminfo") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
    assert abs(imagefiles.available_memory() - kib * 1024) < 2**30  # moments apart: within a GiB


# ---------------------------------------------------------------- intensities

def _camera(n=4, side=128, seed=0):
    """(n, side, side) uint16 slices of a 12-bit camera: content 50..4050 (each end on 20 pixels), the first
    slices darker than the last, and 3 dead (0) and 3 hot (65535) pixels in the stack."""
    rng = np.random.default_rng(seed)
    stack = np.stack([rng.integers(50 + 800 * k, 1300 + 800 * k, size=(side, side)) for k in range(n)])
    stack[0, 0, :20], stack[-1, -1, :20] = 50, 4050
    stack[0, 5, :3], stack[-1, 7, :3] = 0, 65535
    return stack.astype(np.uint16)


def _mapped(raw, low, high):
    """The linear map written out in float64: (low, high) onto 0..255, rounded half up, clipped."""
    scaled = np.floor((raw.astype(np.float64) - low) * 255.0 / (high - low) + 0.5)
    return np.clip(scaled, 0, 255).astype(np.uint8)


def test_a_12_bit_stack_maps_by_the_range_its_content_uses_not_its_hot_pixels(tmp_path):
    raw = _camera()
    _, masks = _blobs(n=4, h=128, w=128)
    root = _write_split(str(tmp_path), "test", raw, masks)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, _ = data.load_split(root, "test")
    part = data.read_split(root, "test")
    assert part.intensity == (50, 4050) and all(type(v) is int for v in part.intensity)
    np.testing.assert_array_equal(x, _mapped(raw, 50, 4050))
    assert x[0, 5, :3].tolist() == [0, 0, 0] and x[-1, 7, :3].tolist() == [255, 255, 255]  # clipped
    assert x[0].max() < 100 < 200 < x[-1].max()           # one map: a dark slice stays dark
    assert len(np.unique(x)) > 200                          # not the 17 grey levels of 4050 / 257
    line = ("16-bit images, values 50..4050 used (0.01%-99.99% of the pixels), mapped linearly to 0..255 "
            "for the whole data set (0.01% of the pixels outside, clipped)")
    assert any(str(w.message).endswith(line) for w in caught), [str(w.message) for w in caught]
    assert line in _report_with_train(tmp_path, root)


def _report_with_train(tmp_path, root):
    """The report of `root` once a training split (8 slices of the same camera) sits beside its test split."""
    raw = _camera(seed=1)
    _, masks = _blobs(n=4, h=128, w=128)
    _write_split(root, "train", raw, masks)
    return _report(root)


def test_the_quantiles_are_numpys_inverted_cdf():
    rng = np.random.default_rng(3)
    pages = [rng.integers(0, 3000, size=(50, 70)).astype(np.uint16) for _ in range(3)]
    pages.append(rng.integers(-500, 70000, size=(40, 30)).astype(np.int32))
    values, counts = imagefiles._histogram(pages)
    every = np.concatenate([p.ravel() for p in pages]).astype(np.int64)
    np.testing.assert_array_equal(np.repeat(values, counts), np.sort(every))
    low, high = imagefiles.intensity_range(values, counts)
    quantiles = [int(np.quantile(every, q, method="inverted_cdf")) for q in imagefiles.QUANTILES]
    assert [low, high] == quantiles
    assert imagefiles.intensity_range(np.array([1000]), np.array([64])) == (1000, 1001)  # a constant image


def test_the_test_split_and_new_slices_take_the_training_map(tmp_path):
    train = _camera(seed=4)
    test = (train.astype(np.int64) * 2).clip(0, 65535).astype(np.uint16)  # a brighter test volume
    _, masks = _blobs(n=4, h=128, w=128)
    root = _write_split(str(tmp_path), "train", train, masks)
    _write_split(root, "test", test, masks)
    first = data.read_split(root, "train")
    second = data.read_split(root, "test", intensity=first.intensity)
    assert first.intensity == second.intensity == (50, 4050)
    np.testing.assert_array_equal(second.images, _mapped(test, 50, 4050))
    own = data.read_split(root, "test")                     # without the map: its own range
    assert own.intensity != first.intensity
    converted = " ".join(second.notes["images"]["converted"])
    assert "values 50..4050 (the map given)" in converted and "outside, clipped" in converted
    notes = {}
    (_, pages), = imagefiles.read_files([os.path.join(root, "test", "x", "s02.png")], notes=notes,
                                   intensity=[3000.5, 5000.5])
    np.testing.assert_array_equal(pages[0], _mapped(test[2], 3000.5, 5000.5))
    assert notes["intensity"] == (3000.5, 5000.5) and 0 < (pages[0] == 255).mean() < 0.5
    assert "16-bit images, values 50..4050 (the map given)" in _report(root)


def test_32_bit_integer_slices_map_the_same_way(tmp_path):
    rng = np.random.default_rng(5)
    raw = rng.integers(-1000, 3001, size=(2, 40, 40)).astype(np.int32)
    raw[0, 0, :10], raw[1, 0, :10] = -1000, 3000
    for i in range(2):
        Image.fromarray(raw[i]).save(tmp_path / f"s{i}.tif")
    assert Image.open(tmp_path / "s0.tif").mode == "I"
    notes = {}
    files = imagefiles.read_files([str(tmp_path / f"s{i}.tif") for i in range(2)], notes=notes)
    assert notes["intensity"] == (-1000, 3000)
    np.testing.assert_array_equal(np.stack([p for _, (p,) in files]), _mapped(raw, -1000, 3000))


def test_a_16_bit_file_holding_8_bit_values_is_kept_as_it_is(tmp_path):
    images, masks = _blobs(n=3)
    _save(tmp_path / "test" / "x" / "s00.png", images[0])                      # 8-bit
    for i in (1, 2):
        _save(tmp_path / "test" / "x" / f"s{i:02d}.png", images[i].astype(np.uint16))  # 8-bit values, 16-bit
    for i in range(3):
        _save(tmp_path / "test" / "y" / f"s{i:02d}.png", masks[i])
    assert Image.open(tmp_path / "test" / "x" / "s01.png").mode.startswith("I")
    part = data.read_split(str(tmp_path), "test")
    np.testing.assert_array_equal(part.images, images)
    assert part.intensity is None
    assert "values kept as they are" in " ".join(part.notes["images"]["converted"])


def test_8_bit_and_deeper_slices_in_one_split_are_refused(tmp_path):
    images, masks = _blobs(n=2)
    _save(tmp_path / "test" / "x" / "s00.png", images[0])
    _save(tmp_path / "test" / "x" / "s01.png", images[1].astype(np.uint16) * 16)  # 12-bit values
    message = _one_line_error(data.read_split, str(tmp_path), "test", masks=False)
    assert "s01.png" in message and "s00.png" in message and "one bit depth" in message
    eight = str(tmp_path / "test" / "x" / "s00.png")        # an 8-bit slice under a 16-bit run's map
    message = _one_line_error(imagefiles.read_files, [eight], intensity=(50, 4050))
    assert "s00.png" in message and "8-bit" in message and "50..4050" in message


# ---------------------------------------------------------------- masks

def _label_image(n=3, side=64, first=1, per_page=4, seed=0, dtype=np.uint8):
    """(n, side, side) label images: `per_page` discs a page, ids first, first + 1, ... over the stack."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:side, 0:side]
    labels = np.zeros((n, side, side), dtype)
    for k in range(n * per_page):
        r, c = rng.integers(8, side - 8, size=2)
        labels[k // per_page][(rows - r) ** 2 + (cols - c) ** 2 < rng.integers(16, 50)] = first + k
    return labels


@pytest.mark.parametrize("first, dtype", [(1, np.uint8), (37, np.uint16)])
def test_a_label_image_reads_every_non_zero_id_as_foreground(tmp_path, first, dtype):
    labels = _label_image(first=first, dtype=dtype, per_page=4 if dtype == np.uint8 else 87)
    images, _ = _blobs(n=3, h=64, w=64)
    root = _write_split(str(tmp_path), "test", images, labels)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _, y = data.load_split(root, "test")
    np.testing.assert_array_equal(y, (labels != 0).astype(np.uint8))
    assert y.mean() > 0.05                                  # half the full scale would have kept none
    ids = np.unique(labels[labels > 0])
    shown = f"masks hold {len(ids)} ids ({ids[0]}..{ids[-1]})"
    assert any(shown in str(w.message) and "label image" in str(w.message) for w in caught)
    assert shown in _report_with_train_labels(root, first, dtype)


def _report_with_train_labels(root, first, dtype):
    images, _ = _blobs(n=3, h=64, w=64)
    _write_split(root, "train", images, _label_image(first=first, dtype=dtype, seed=1))
    return _report(root)


def test_one_slice_never_flips_the_rule_of_its_folder(tmp_path):
    """A page holding only id 1 (its own full scale) or no object reads as its folder reads."""
    labels = _label_image(n=4)
    labels[1][labels[1] > 0] = 1
    labels[2] = 0
    images, _ = _blobs(n=4, h=64, w=64)
    root = _write_split(str(tmp_path), "test", images, labels)
    part = data.read_split(root, "test")
    assert part.notes["masks"]["rule"] == "labels"
    np.testing.assert_array_equal(part.masks, (labels != 0).astype(np.uint8))


def test_masks_that_are_not_label_images_keep_the_half_scale_rule(tmp_path):
    """Anti-aliased 0/255 with a few edge values, Kasthuri++'s border 2 larger than the objects with a few
    edge values, a soft (probability-like) mask: none is a label image."""
    rows, cols = np.mgrid[0:64, 0:64]
    antialiased = np.where((rows - 30) ** 2 + (cols - 30) ** 2 < 300, 255, 0).astype(np.uint8)
    antialiased[13, 25:31], antialiased[47, 28:31] = [3, 60, 127, 128, 200, 254], [9, 90, 190]
    kasthuri = np.zeros((64, 64), np.uint8)                 # border and object of one area: no majority
    kasthuri[10:30, 10:40], kasthuri[4:, 54:] = 255, 2
    kasthuri[9, 12:17], kasthuri[30, 20:24] = [40, 80, 120, 160, 200], [60, 130, 190, 250]
    soft = np.round(255 * np.exp(-((rows - 32) ** 2 + (cols - 32) ** 2) / 400.0)).astype(np.uint8)
    for name, mask in (("antialiased", antialiased), ("kasthuri", kasthuri), ("soft", soft)):
        root = _write_split(str(tmp_path / name), "test", _blobs(n=2, h=64, w=64)[0], [mask, mask])
        part = data.read_split(root, "test")
        assert part.notes["masks"]["rule"] == "levels", name
        np.testing.assert_array_equal(part.masks[0], (mask >= 128).astype(np.uint8))


@pytest.mark.parametrize("values, pairs, expected", [
    ({(0, 255): 900, (1, 255): 300, (2, 255): 250, (3, 255): 200}, (700, 720), True),   # ids 1..3
    ({(0, 255): 900, (1, 255): 300, (2, 255): 250, (3, 255): 200}, (500, 720), False),  # not flat: soft
    ({(0, 255): 900, (1, 255): 300, (2, 255): 250, (3, 255): 200}, (576, 720), True),   # 4 of 5: labels
    ({(0, 255): 900, (1, 255): 300, (2, 255): 250}, (500, 500), False),                 # two values
    ({(0, 255): 900, (1, 255): 800, (2, 255): 250, (3, 255): 200}, (1200, 1200), False),  # a majority
    ({(0, 255): 900, (2, 255): 480, (255, 255): 470, (90, 255): 20, (200, 255): 9}, (900, 930), False),
    ({(0, 255): 900, (2, 255): 480, (255, 255): 470, (90, 255): 50}, (900, 930), True),  # a tenth: object
    ({(0, 1): 900, (1, 1): 500, (0, 255): 900, (255, 255): 500, (7, 255): 90}, (990, 1000), False),
    ({(0, 1): 900, (0.25, 1): 300, (0.5, 1): 300, (0.75, 1): 300}, (800, 800), False),  # not integers
])
def test_the_label_image_signs_on_their_borders(values, pairs, expected):
    """The last but one: 1-bit pages (full scale 1) beside 8-bit 0/255 pages count as one level."""
    assert imagefiles.is_label_image(values, pairs) is expected


def test_a_split_without_foreground_is_flagged_and_does_not_end_ok(tmp_path):
    images, masks = _blobs(n=3)
    root = _write_split(str(tmp_path), "train", images, np.zeros_like(masks))
    _write_split(root, "test", images[:2], np.zeros_like(masks[:2]))
    train, test = data.read_split(root, "train"), data.read_split(root, "test")
    assert train.foreground == 0 and test.foreground == 0
    assert data.read_split(root, "train", masks=False).foreground is None
    text = _report(root)
    assert "train.py refuses a training split without foreground, except for a pretext run" in text
    assert "IoU_F is then 1 for a slice predicted empty and 0 for any false positive" in text
    last = text.splitlines()[-1]
    assert last.startswith("not ok:") and "train and test masks hold no foreground" in last
    assert data.report_command([root]) == 1
    _write_split(root, "test", images[:2], masks[:2])
    assert data.read_split(root, "test").foreground == pytest.approx((masks[:2] > 0).mean())
    text = _report(root)
    assert "train masks hold no foreground" in text.splitlines()[-1] and "test masks" not in text
    _write_split(root, "train", images, masks)
    assert _report(root).splitlines()[-1].startswith("ok: 3 train and 2 test slices")
    assert data.report_command([root]) == 0


# ---------------------------------------------------------------- slices of different sizes

SIZES = [(40, 48), (40, 48), (20, 30), (40, 48), (12, 10)]


def _odd_sizes(seed=0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in SIZES]
    return images, [(im > 128).astype(np.uint8) for im in images]


def test_slices_of_different_sizes_load_as_a_list_and_the_report_names_the_sizes(tmp_path):
    images, masks = _odd_sizes()
    root = _write_split(str(tmp_path), "test", images, [m * 255 for m in masks])
    part = data.read_split(root, "test")
    assert isinstance(part.images, list) and isinstance(part.masks, list)
    for got, want, got_mask, want_mask in zip(part.images, images, part.masks, masks):
        np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got_mask, want_mask)
    assert data.slices_text(part.images) == "5 slices: 3 of 40x48, 1 of 20x30, 1 of 12x10"
    line = "test: 5 slices: 3 of 40x48, 1 of 20x30, 1 of 12x10, from test/x"
    assert line in "\n".join(data.describe_split(part, root))
    same = data.read_split(_write_split(str(tmp_path / "same"), "test", images[:2], masks[:2]), "test")
    assert isinstance(same.images, np.ndarray) and same.images.shape == (2, 40, 48)
    assert data.slices_text(same.images) == "2 slices of 40x48"


def test_tiles_of_slices_of_different_sizes_are_cut_slice_by_slice():
    images, _ = _odd_sizes()
    tiles = data.extract_tiles(images, 16)
    expected = np.concatenate([data.extract_tiles(im[None], 16) for im in images])
    np.testing.assert_array_equal(tiles, expected)
    assert len(tiles) == 3 * 3 * 3 + 2 * 2 + 1
    np.testing.assert_array_equal(tiles[:9], data.extract_tiles(images[0][None], 16))
    stack = np.stack([images[0], images[1], images[3]])
    np.testing.assert_array_equal(data.extract_tiles(list(stack), 16), data.extract_tiles(stack, 16))


def test_crops_draw_slices_of_different_sizes_as_often_as_their_tiles():
    """An epoch of crops weighs the slices as the tile grid does: 9, 9, 4 and 1 tiles of 16."""
    sizes = [(40, 48), (40, 48), (20, 30), (12, 10)]
    slices = [np.full(size, 40 * (k + 1), np.uint8) for k, size in enumerate(sizes)]  # slice k holds 40(k+1)
    ds = data.CropDataset(slices, tile=16, seed=0)
    drawn = []
    for epoch in range(30):
        ds.set_epoch(epoch)
        drawn += [int(round(float(ds[i][0][0, 0, 0]) * 255)) // 40 - 1 for i in range(len(ds))]
    share = np.bincount(drawn, minlength=4) / len(drawn)    # uniform over slices would give 0.25 each
    np.testing.assert_allclose(share, np.array([9, 9, 4, 1]) / 23, atol=0.04)


def test_crops_of_a_list_of_equal_slices_are_those_of_the_stack():
    images, masks = _odd_sizes(seed=2)
    stack, stack_masks = np.stack([images[0], images[1], images[3]]), np.stack([masks[0], masks[1], masks[3]])
    a = data.CropDataset(stack, stack_masks, tile=16, augment=True, seed=5)
    b = data.CropDataset(list(stack), list(stack_masks), tile=16, augment=True, seed=5)
    assert len(a) == len(b) == 27
    for i in range(len(a)):
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)


# ---------------------------------------------------------------- folders without a test split

def _numbered(n, h=24, w=32):
    """n slices whose pixel (0, 0) is their index, masks whose pixel (0, 1) is foreground for odd ones."""
    images, masks = _blobs(n=n, h=h, w=w)
    images[:, 0, 0] = np.arange(n)
    masks[:, 0, 1] = 255 * (np.arange(n) % 2)
    return images, masks


@pytest.mark.parametrize("x, y", [("Images", "MASKS"), ("train/x", "train/y")])
def test_a_folder_without_a_test_split_holds_out_its_last_fifth(tmp_path, x, y):
    images, masks = _numbered(12)
    for i in range(12):
        _save(tmp_path / x / f"s{i}.png", images[i])         # natural order: s2 before s10
        _save(tmp_path / y / f"m{i}.png", masks[i])
    root = str(tmp_path)
    train, test = data.read_split(root, "train"), data.read_split(root, "test")
    assert train.images[:, 0, 0].tolist() == list(range(9)) and test.images[:, 0, 0].tolist() == [9, 10, 11]
    assert train.masks[:, 0, 1].tolist() == [0, 1] * 4 + [0] and test.masks[:, 0, 1].tolist() == [1, 0, 1]
    assert test.image_names == [os.path.join(root, x, f"s{i}.png") for i in (9, 10, 11)]
    assert test.mask_names == [os.path.join(root, y, f"m{i}.png") for i in (9, 10, 11)]
    assert train.layout == test.layout == f"{x.replace('/', os.sep)}, {y.replace('/', os.sep)} " \
                                          "(no test split: the last 20% of the slices held out)"
    held = os.path.join(x, "s9.png") + " to " + os.path.join(x, "s11.png")
    rule = f"the last 3 of 12 labelled slices in natural order ({held}), 20% rounded up"
    assert test.held_out == train.held_out == rule
    text = _report(root)
    assert f"test split held out: {rule}" in text and "train: 9 slices" in text
    assert text.splitlines()[-1] == "ok: 9 train and 3 test slices, each paired with its own mask"


@pytest.mark.parametrize("n, n_test", [(2, 1), (5, 1), (6, 2), (10, 2), (11, 3), (165, 33)])
def test_hold_out_sizes(n, n_test):
    split = data.hold_out(n, "images")
    assert list(split["test"]) == list(range(n - n_test, n))
    assert list(split["train"]) == list(range(n - n_test))


def test_a_single_labelled_slice_without_a_test_split_is_refused(tmp_path):
    images, masks = _numbered(1)
    _save(tmp_path / "images" / "a.png", images[0])
    _save(tmp_path / "masks" / "a.png", masks[0])
    message = _one_line_error(data.read_split, str(tmp_path), "train")
    assert os.path.join(str(tmp_path), "images") in message and "1 labelled slice" in message
    assert "add slices, or put test slices in test/x and test/y" in message


def test_the_training_map_of_a_held_out_folder_comes_from_its_training_slices(tmp_path):
    raw = np.concatenate([_camera(n=4), _camera(n=4, seed=1)[:1] * 0 + 60000])  # a bright last slice
    for i, page in enumerate(raw):
        _save(tmp_path / "images" / f"{i}.png", page)
        _save(tmp_path / "masks" / f"{i}.png", _blobs(n=1, h=128, w=128)[1][0])
    train = data.read_split(str(tmp_path), "train")
    assert train.intensity == (50, 4050) and len(train.images) == 4
    test = data.read_split(str(tmp_path), "test", intensity=train.intensity)
    assert (test.images == 255).all()


def test_an_unlabelled_training_folder_is_no_held_out_layout(tmp_path):
    """An App. A target: train/x without masks or test split keeps every slice for training."""
    images, _ = _numbered(5)
    _write_split(str(tmp_path), "train", images)
    layout, folders = data.find_layout(str(tmp_path))
    assert layout == "train/x, train/y, test/x, test/y" and folders["train"] != folders["test"]
    assert data.read_split(str(tmp_path), "train", masks=False).images[:, 0, 0].tolist() == [0, 1, 2, 3, 4]


def test_no_layout_names_every_accepted_one_and_two_layouts_are_refused(tmp_path):
    os.makedirs(tmp_path / "slices")
    message = _one_line_error(data.find_layout, str(tmp_path))
    for name in ("train/x, train/y, test/x, test/y", "Train_In, Train_Out, Test_In, Test_Out",
                 "train/x and train/y alone", "images and masks"):
        assert name in message, message
    images, masks = _numbered(2)
    _write_split(str(tmp_path), "train", images, masks)
    for name in ("images", "masks"):
        os.makedirs(tmp_path / name)
    message = _one_line_error(data.find_layout, str(tmp_path))
    assert "images, masks" in message and "train/x" in message and "keep one layout" in message


def test_size_text_names_height_by_width():
    assert data.size_text((768, 1024)) == "768x1024" and not hasattr(data, "hw")
