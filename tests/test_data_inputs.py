"""Data as users bring it (data.py, imagefiles.py): whole montages and 12-bit cameras.
Generated files only; a small file stands in for a montage where only Pillow's guard sees the size."""
import os
import warnings

import numpy as np
import pytest
from PIL import Image

import data
import imagefiles


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
        (_, pages), = data.read_files([path])
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
    need_8, need_16 = 768 * 15, 768 * 17
    assert imagefiles.bytes_per_pixel("L") == 15 and imagefiles.bytes_per_pixel("I;16B") == 17
    assert imagefiles.bytes_per_pixel("RGB") == 21 and imagefiles.bytes_per_pixel("1") == 15
    monkeypatch.setattr(imagefiles, "available_memory", lambda: need_16 - 1)
    message = _one_line_error(data.read_split, str(tmp_path), "test", masks=False)
    assert "s00.tif" in message and "24x32" in message and "768 pixels" in message
    assert "17 bytes per pixel" in message and "GiB are available" in message and "crop" in message
    monkeypatch.setattr(imagefiles, "available_memory", lambda: need_16)  # just enough
    assert len(data.read_split(str(tmp_path), "test", masks=False).images) == 2
    monkeypatch.setattr(imagefiles, "available_memory", lambda: need_8 - 1)
    assert "eight.png" in _one_line_error(data.read_files, [str(tmp_path / "eight.png")])
    monkeypatch.setattr(imagefiles, "available_memory", lambda: need_8)
    assert len(data.read_files([str(tmp_path / "eight.png")])) == 1
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
    (_, pages), = data.read_files([os.path.join(root, "test", "x", "s02.png")], notes=notes,
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
    files = data.read_files([str(tmp_path / f"s{i}.tif") for i in range(2)], notes=notes)
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
    message = _one_line_error(data.read_files, [eight], intensity=(50, 4050))
    assert "s00.png" in message and "8-bit" in message and "50..4050" in message
