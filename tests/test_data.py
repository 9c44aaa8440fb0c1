"""Tests for data.py: loader round trips and errors, tiling, validation split, augmentation,
TileDataset reproducibility. Generated data only (tests/test_synthetic.py covers the synthetic set)."""
import math
import os
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

import data


def _save(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)                           # bool arrays give 1-bit images


def _save_stack(path, arrays):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    pages = [Image.fromarray(a) for a in arrays]
    pages[0].save(path, save_all=True, append_images=pages[1:])


def _random_set(n=3, h=20, w=24, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    masks = (rng.random((n, h, w)) < 0.3).astype(np.uint8)
    return images, masks


def _write_slices(root, split, images, masks, ext_x=".png", ext_y=".png"):
    for i, (image, mask) in enumerate(zip(images, masks)):
        _save(os.path.join(root, split, "x", f"slice_{i:02d}{ext_x}"), image)
        _save(os.path.join(root, split, "y", f"label_{i:02d}{ext_y}"), mask * 255)


# ---------------------------------------------------------------- loader round trips

def test_per_slice_png_round_trip(tmp_path):
    images, masks = _random_set()
    _write_slices(str(tmp_path), "test", images, masks)
    x, y = data.load_split(str(tmp_path), "test")
    assert x.dtype == np.uint8 and y.dtype == np.uint8
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, masks)


def test_per_slice_tiff_sorted_by_name_and_case_insensitive(tmp_path):
    images, masks = _random_set(n=4, seed=1)
    root = str(tmp_path)
    names = ["b.TIF", "a.tiff", "d.Tif", "c.tif"]               # sorted: a, b, c, d
    for name, image, mask in zip(names, images, masks):
        _save(os.path.join(root, "test", "x", name), image)
        _save(os.path.join(root, "test", "y", name), mask.astype(bool))  # 1-bit masks
    assert Image.open(os.path.join(root, "test", "y", names[0])).mode == "1"
    x, y = data.load_split(root, "test")
    order = np.argsort(names)
    np.testing.assert_array_equal(x, images[order])
    np.testing.assert_array_equal(y, masks[order])


def test_multipage_tiff_stacks(tmp_path):
    images, masks = _random_set(n=5, seed=2)
    root = str(tmp_path)
    _save_stack(os.path.join(root, "test", "x", "volume.tif"), images)
    _save_stack(os.path.join(root, "test", "y", "labels.tif"), masks * 255)
    x, y = data.load_split(root, "test")
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(y, masks)


def test_rgb_images_to_luminance_with_warning(tmp_path):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, size=(2, 12, 14, 3), dtype=np.uint8)
    _, masks = _random_set(n=2, h=12, w=14)
    root = str(tmp_path)
    for i in range(2):
        _save(os.path.join(root, "test", "x", f"{i}.png"), rgb[i])
        _save(os.path.join(root, "test", "y", f"{i}.png"), masks[i] * 255)
    with pytest.warns(UserWarning, match="luminance"):
        x, _ = data.load_split(root, "test")
    luma = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # ITU-R 601-2
    assert np.abs(x.astype(np.float64) - luma).max() <= 1.0


def test_masks_false_needs_no_y_folder(tmp_path):
    images, _ = _random_set(n=2)
    for i in range(2):
        _save(os.path.join(str(tmp_path), "train", "x", f"{i}.png"), images[i])
    x, y = data.load_split(str(tmp_path), "train", masks=False)
    assert y is None
    np.testing.assert_array_equal(x, images)


# ---------------------------------------------------------------- loader errors

def _error(root, split="train", masks=True):
    with pytest.raises(data.DataError) as info:
        data.load_split(root, split, masks=masks)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_error_missing_folder(tmp_path):
    images, _ = _random_set(n=2)
    for i in range(2):  # training images without masks: an unlabelled set, no test split to hold out
        _save(os.path.join(str(tmp_path), "train", "x", f"{i}.png"), images[i])
    message = _error(str(tmp_path), "test")
    assert os.path.join(str(tmp_path), "test", "x") in message and "not found" in message
    message = _error(str(tmp_path / "nowhere"))
    assert "nowhere" in message and "not found" in message


def test_error_empty_folder(tmp_path):
    os.makedirs(tmp_path / "train" / "x")
    (tmp_path / "train" / "x" / "notes.txt").write_text("not an image")
    message = _error(str(tmp_path))
    assert os.path.join(str(tmp_path), "train", "x") in message and "no image files" in message


def test_error_different_counts(tmp_path):
    images, masks = _random_set(n=3)
    _write_slices(str(tmp_path), "train", images, masks)
    os.remove(tmp_path / "train" / "y" / "label_02.png")
    message = _error(str(tmp_path))
    assert os.path.join(str(tmp_path), "train", "x") in message
    assert os.path.join(str(tmp_path), "train", "y") in message
    assert "3 images" in message and "2 masks" in message


def test_error_image_and_mask_sizes(tmp_path):
    images, masks = _random_set(n=2, h=20, w=24)
    _write_slices(str(tmp_path), "train", images, masks)
    _save(str(tmp_path / "train" / "y" / "label_01.png"), np.zeros((20, 23), np.uint8))
    message = _error(str(tmp_path))
    assert "label_01.png" in message and "slice_01.png" in message
    assert "20x23" in message and "20x24" in message


@pytest.mark.parametrize("content", [b"definitely not a picture" * 4, "truncated"])
def test_error_corrupt_file(tmp_path, content):
    images, masks = _random_set(n=3)
    _write_slices(str(tmp_path), "train", images, masks)
    bad = tmp_path / "train" / "x" / "slice_01.png"
    if content == "truncated":
        content = bad.read_bytes()[:len(bad.read_bytes()) // 2]
    bad.write_bytes(content)
    message = _error(str(tmp_path))
    assert "slice_01.png" in message and "cannot read" in message


# ---------------------------------------------------------------- padding and tiles

def _mirror_reference(size, before, after):
    """Indices of NumPy's 'symmetric' padding written out by hand (edge pixel repeated)."""
    out = []
    for i in range(-before, size + after):
        while i < 0 or i >= size:
            i = -i - 1 if i < 0 else 2 * size - 1 - i
        out.append(i)
    return np.array(out)


def _symmetric_reference(stack, rows, cols):
    """NumPy's own 'symmetric' padding of the last two axes by (before, after) rows and columns."""
    return np.pad(stack, ((0, 0), rows, cols), "symmetric")


@pytest.mark.ex7
@pytest.mark.parametrize("size, multiple, expected",
                         [(768, 256, (0, 0)), (1024, 256, (0, 0)), (5, 4, (2, 1)),
                          (1463, 256, (37, 36)), (1613, 256, (90, 89)), (3, 8, (3, 2))])
def test_padding_for(size, multiple, expected):
    assert data.padding_for(size, multiple) == expected


@pytest.mark.ex7
def test_pad_to_multiple_matches_symmetric_padding():
    rng = np.random.default_rng(0)
    stack = rng.integers(0, 256, size=(2, 13, 7), dtype=np.uint8)
    padded = data.pad_to_multiple(stack, 8)
    rows, cols = _mirror_reference(13, 2, 1), _mirror_reference(7, 1, 0)
    np.testing.assert_array_equal(padded, stack[:, rows][:, :, cols])
    np.testing.assert_array_equal(padded, _symmetric_reference(stack, (2, 1), (1, 0)))
    np.testing.assert_array_equal(data.pad_to_multiple(stack[0], 8), padded[0])  # (H, W) too
    np.testing.assert_array_equal(data.pad_to_multiple(stack, 1), stack)           # no-op
    square = rng.random((16, 32))
    np.testing.assert_array_equal(data.pad_to_multiple(square, 16), square)


@pytest.mark.ex7
def test_lucchi_slices_give_12_tiles_that_reassemble():
    stack = np.arange(2 * 768 * 1024, dtype=np.int64).reshape(2, 768, 1024)
    tiles = data.extract_tiles(stack, 256)
    assert tiles.shape == (24, 256, 256)
    for k, tile in enumerate(tiles):
        s, r, c = k // 12, (k % 12) // 4, k % 4                 # row-major per slice
        np.testing.assert_array_equal(tile, stack[s, r * 256:(r + 1) * 256, c * 256:(c + 1) * 256])


@pytest.mark.ex7
def test_tiles_of_padded_slices_reassemble():
    rng = np.random.default_rng(1)
    stack = rng.integers(0, 256, size=(3, 50, 70), dtype=np.uint8)
    tiles = data.extract_tiles(stack, 32)
    padded = data.pad_to_multiple(stack, 32)                    # (3, 64, 96)
    assert tiles.shape == (3 * 2 * 3, 32, 32)
    rebuilt = tiles.reshape(3, 2, 3, 32, 32).transpose(0, 1, 3, 2, 4).reshape(3, 64, 96)
    np.testing.assert_array_equal(rebuilt, padded)


# ---------------------------------------------------------------- validation split

@pytest.mark.parametrize("n", [2, 7, 30, 1980])
def test_split_validation(n):
    train, val = data.split_validation(n, 0.1, seed=3)
    assert len(np.intersect1d(train, val)) == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(n))
    assert len(val) == max(1, math.ceil(round(0.1 * n, 6)))
    again = data.split_validation(n, 0.1, seed=3)
    np.testing.assert_array_equal(again[1], val)
    if n >= 30:
        assert not np.array_equal(data.split_validation(n, 0.1, seed=4)[1], val)


def test_split_validation_single_item():
    train, val = data.split_validation(1, 0.1)
    assert list(train) == [0] and len(val) == 0


# ---------------------------------------------------------------- rotation and augmentation

def test_rotate_zero_is_identity():
    rng = np.random.default_rng(0)
    image = rng.random((9, 14)).astype(np.float32)
    np.testing.assert_allclose(data.rotate(image, 0.0, order=1), image, atol=1e-6)
    mask = (image > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(data.rotate(mask, 0.0, order=0), mask)


@pytest.mark.parametrize("size", [8, 9])
def test_rotate_90_is_rot90_counter_clockwise(size):
    rng = np.random.default_rng(size)
    image = rng.random((size, size)).astype(np.float32)
    np.testing.assert_allclose(data.rotate(image, 90, order=1), np.rot90(image, 1), atol=1e-5)
    np.testing.assert_allclose(data.rotate(image, -90, order=1), np.rot90(image, -1), atol=1e-5)
    mask = (image > 0.5).astype(np.uint8)
    np.testing.assert_array_equal(data.rotate(mask, 90, order=0), np.rot90(mask, 1))


def test_rotate_180_twice_is_identity():
    rng = np.random.default_rng(1)
    image = rng.random((11, 16)).astype(np.float32)
    twice = data.rotate(data.rotate(image, 180, order=1), 180, order=1)
    np.testing.assert_allclose(twice, image, atol=1e-5)


def test_rotate_bilinear_is_exact_on_a_ramp():
    """Bilinear interpolation reproduces a linear function wherever no fill is needed."""
    height, width, angle = 21, 30, 33.0
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = 0.3 * rows - 0.7 * cols + 2.0
    out = data.rotate(ramp.astype(np.float32), angle, order=1)
    t = math.radians(angle)
    v, u = rows - (height - 1) / 2, cols - (width - 1) / 2
    src_r = math.sin(t) * u + math.cos(t) * v + (height - 1) / 2   # counter-clockwise on screen
    src_c = math.cos(t) * u - math.sin(t) * v + (width - 1) / 2
    inside = (src_r >= 0) & (src_r <= height - 1) & (src_c >= 0) & (src_c <= width - 1)
    assert inside.mean() > 0.5
    np.testing.assert_allclose(out[inside], (0.3 * src_r - 0.7 * src_c + 2.0)[inside], atol=1e-4)


def test_rotate_fill_is_symmetric_mirror():
    """Reflect fill equals rotating a copy padded with NumPy 'symmetric' padding, then cropping."""
    rng = np.random.default_rng(2)
    image = rng.random((20, 20)).astype(np.float32)
    big = np.pad(image, 12, mode="symmetric")
    for angle in (37.0, -128.0):
        expected = data.rotate(big, angle, order=1)[12:-12, 12:-12]
        np.testing.assert_allclose(data.rotate(image, angle, order=1), expected, atol=1e-5)
        mask = (image > 0.5).astype(np.uint8)
        expected = data.rotate(np.pad(mask, 12, mode="symmetric"), angle, order=0)[12:-12, 12:-12]
        np.testing.assert_array_equal(data.rotate(mask, angle, order=0), expected)


def test_rotate_nearest_keeps_mask_values():
    mask = (np.random.default_rng(3).random((32, 32)) < 0.4).astype(np.uint8)
    out = data.rotate(mask, 23.0, order=0)
    assert out.dtype == np.uint8 and set(np.unique(out)) <= {0, 1}


def test_augment_pair_same_geometry_for_image_and_mask():
    rng = np.random.default_rng(4)
    blocks = rng.random((8, 8)) > 0.5                           # coarse shapes, no symmetry
    image = np.kron(blocks, np.ones((8, 8))).astype(np.uint8) * 200 + 20  # (64, 64) uint8
    mask = (image > 100).astype(np.uint8)
    moved = 0
    for seed in range(12):
        x, y = data.augment_pair(image, mask, np.random.default_rng(seed))
        assert x.dtype == np.float32 and x.shape == image.shape and 0 <= x.min() <= x.max() <= 1
        assert y.dtype == np.uint8 and set(np.unique(y)) <= {0, 1}
        assert ((x > 110 / 255) == y.astype(bool)).mean() > 0.97
        moved += (y != mask).mean() > 0.1
    assert moved >= 8                                           # it does transform


# ---------------------------------------------------------------- TileDataset

def _tiles(n=4, t=32, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, t, t), dtype=np.uint8)
    return images, (images > 128).astype(np.uint8)


def test_tile_dataset_without_augmentation_returns_scaled_tiles():
    images, masks = _tiles()
    x, y = data.TileDataset(images, masks)[2]
    assert x.shape == (1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.float32
    np.testing.assert_allclose(x[0].numpy(), images[2] / 255.0, atol=1e-7)
    np.testing.assert_array_equal(y[0].numpy(), masks[2])


def test_tile_dataset_reproducible_per_seed_epoch_index():
    images, masks = _tiles()
    images[1], masks[1] = images[0], masks[0]                   # identical tiles at 0 and 1
    a = data.TileDataset(images, masks, augment=True, seed=7)
    b = data.TileDataset(images, masks, augment=True, seed=7)
    for i in range(4):
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)
        torch.testing.assert_close(a[i], a[i], rtol=0, atol=0)
    assert not torch.equal(a[0][0], a[1][0])                    # the index feeds the generator
    first = a[0]
    a.set_epoch(1)
    assert not torch.equal(a[0][0], first[0])                   # the epoch feeds it too
    a.set_epoch(0)
    torch.testing.assert_close(a[0], first, rtol=0, atol=0)     # resumable
    assert not torch.equal(data.TileDataset(images, masks, augment=True, seed=8)[0][0], first[0])


def test_tile_dataset_same_in_dataloader_workers():
    images, masks = _tiles(n=6)
    ds = data.TileDataset(images, masks, augment=True, seed=2)
    ds.set_epoch(3)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2)
    x = torch.cat([batch[0] for batch in loader])
    torch.testing.assert_close(x, torch.stack([ds[i][0] for i in range(6)]), rtol=0, atol=0)


def test_tile_dataset_denoising_pairs():
    images, _ = _tiles()

    def invert_and_noise(image, rng):                           # uint8 in, uint8 out
        noisy = 255.0 - image + rng.normal(0, 3, image.shape)
        return np.clip(np.round(noisy), 0, 255).astype(np.uint8)

    ds = data.TileDataset(images, augment=True, seed=1, degrade=invert_and_noise)
    degraded, clean = ds[3]
    assert degraded.shape == clean.shape == (1, 32, 32)
    assert torch.all((clean * 255 - torch.round(clean * 255)).abs() < 1e-4)  # clean is uint8/255
    assert (degraded - (1 - clean)).abs().mean() < 0.03         # degrade saw the augmented tile
    torch.testing.assert_close(ds[3], (degraded, clean), rtol=0, atol=0)
    plain = data.TileDataset(images, degrade=invert_and_noise)[3][1]
    np.testing.assert_allclose(plain[0].numpy(), images[3] / 255.0, atol=1e-7)


# ---------------------------------------------------------------- --rotation and --sampling crops

def _dihedral(array):
    """The 8 right-angle rotations and flips of an (H, W) array, written with NumPy only."""
    return [np.rot90(a, k) for a in (array, array[:, ::-1]) for k in range(4)]


def test_right_rotation_is_an_exact_permutation_that_moves_the_mask_too():
    rng = np.random.default_rng(5)
    image = rng.integers(0, 256, size=(24, 24), dtype=np.uint8)  # no symmetry: each transform unique
    mask = (image > 140).astype(np.uint8)
    candidates = [(x.astype(np.float32) / 255, y) for x, y in zip(_dihedral(image), _dihedral(mask))]
    seen = set()
    for seed in range(40):
        x, y = data.augment_pair(image, mask, np.random.default_rng(seed), rotation="right")
        assert x.dtype == np.float32 and y.dtype == np.uint8
        np.testing.assert_array_equal(np.sort(x, axis=None), np.sort(image / np.float32(255), axis=None))
        hits = [k for k, (cx, cy) in enumerate(candidates) if np.array_equal(x, cx)]
        assert len(hits) == 1 and np.array_equal(y, candidates[hits[0]][1])  # same transform on the mask
        seen.add(hits[0])
    assert len(seen) == 8                                      # all of them are drawn


def test_any_nearest_draws_the_same_angles_and_keeps_measured_pixels():
    rng = np.random.default_rng(6)
    image = rng.integers(0, 256, size=(32, 32), dtype=np.uint8)
    mask = (image > 100).astype(np.uint8)
    for seed in range(6):
        x, y = data.augment_pair(image, mask, np.random.default_rng(seed), rotation="any-nearest")
        assert set(np.unique(np.round(x * 255).astype(int))) <= set(np.unique(image))
        np.testing.assert_array_equal(y, (np.round(x * 255) > 100).astype(np.uint8))  # same index map
        # the same draw as the thesis's "any", only the image resampling differs
        ref, ref_mask = data.augment_pair(image, mask, np.random.default_rng(seed), rotation="any")
        np.testing.assert_array_equal(y, ref_mask)
        assert not np.allclose(ref, x)
    with pytest.raises(ValueError, match="rotation"):
        data.augment_pair(image, mask, rng, rotation="diagonal")


def test_bilinear_any_angle_smooths_noise_and_the_other_modes_do_not():
    """White noise: bilinear resampling at a non-right angle averages neighbours (a low-pass filter)."""
    noise = np.random.default_rng(7).random((64, 64)).astype(np.float32)

    def roughness(a):
        return np.abs(np.diff(a, axis=1)).mean()
    geometry = (33.0, False, False)
    assert roughness(data.apply_geometry(noise, geometry, order=1)) < 0.7 * roughness(noise)  # ~0.56
    assert roughness(data.apply_geometry(noise, geometry, order=0)) > 0.85 * roughness(noise)  # ~0.92
    np.testing.assert_array_equal(data.apply_geometry(noise, (90, False, True), order=1),
                                  np.rot90(noise)[::-1])        # an int angle is exact


def _crop_set(n=3, h=40, w=50, seed=0):
    rng = np.random.default_rng(seed)
    slices = rng.integers(0, 256, size=(n, h, w), dtype=np.uint8)
    return slices, (slices > 128).astype(np.uint8)


def _find_window(padded, crop):
    """All (slice, top, left) where `crop` sits in the padded slices (a stack or a list), by brute force."""
    t = crop.shape[0]
    return [(k, r, c) for k, p in enumerate(padded) for r in range(p.shape[0] - t + 1)
            for c in range(p.shape[1] - t + 1) if np.array_equal(p[r:r + t, c:c + t], crop)]


def _windows(ds, padded, padded_masks):
    """(slice, top, left) of every sample of a CropDataset, each found once in the padded slices and
    checked to come with the same window of its mask."""
    t, found = ds.tile, []
    for i in range(len(ds)):
        x, y = ds[i]
        where = _find_window(padded, np.round(x[0].numpy() * 255).astype(np.uint8))
        assert len(where) == 1
        k, r, c = where[0]
        np.testing.assert_array_equal(y[0].numpy(), padded_masks[k][r:r + t, c:c + t])
        found.append(where[0])
    return found


def test_crops_are_windows_of_the_padded_slices_with_their_masks():
    slices, masks = _crop_set()
    padded, padded_masks = data.pad_to_multiple(slices, 32), data.pad_to_multiple(masks, 32)  # (3, 64, 64)
    ds = data.CropDataset(slices, masks, tile=32, seed=3)
    assert len(ds) == len(data.extract_tiles(slices, 32)) == 3 * 2 * 2  # an epoch = the tile grid
    tops = [r for _, r, _ in _windows(ds, padded, padded_masks)]
    assert min(tops) < data.padding_for(40, 32)[0] or max(tops) > 32 - data.padding_for(40, 32)[1]
    assert data.CropDataset(slices, masks, tile=32, length=5).__len__() == 5


def test_crops_of_slices_of_different_sizes_come_from_each_padded_slice_with_its_mask():
    rng = np.random.default_rng(1)
    slices = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(40, 48), (40, 48), (20, 30), (12, 10)]]
    masks = [(s > 128).astype(np.uint8) for s in slices]
    padded = [data.pad_to_multiple(s, 16) for s in slices]  # the 12x10 slice is mirrored up to 16x16
    ds = data.CropDataset(slices, masks, tile=16, seed=2)
    assert len(ds) == len(data.extract_tiles(slices, 16)) == 2 * 9 + 4 + 1
    seen = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        seen |= {k for k, _, _ in _windows(ds, padded, [data.pad_to_multiple(m, 16) for m in masks])}
    assert seen == {0, 1, 2, 3}                                 # the small slices are drawn too
    with pytest.raises(ValueError, match="differ in shape"):
        data.CropDataset(slices, masks[::-1], tile=16)


def test_crops_reproducible_per_seed_epoch_index_and_fresh_each_epoch():
    slices, masks = _crop_set(seed=1)
    a, b = data.CropDataset(slices, masks, tile=32, seed=4), data.CropDataset(slices, masks, tile=32, seed=4)
    epoch0 = [a[i] for i in range(len(a))]
    for i in range(len(a)):
        torch.testing.assert_close(b[i], epoch0[i], rtol=0, atol=0)
    assert len({bytes(x.numpy()) for x, _ in epoch0}) == len(a)  # the index feeds the generator
    a.set_epoch(1)
    changed = sum(not torch.equal(a[i][0], epoch0[i][0]) for i in range(len(a)))
    assert changed == len(a)                                    # new windows every epoch
    a.set_epoch(0)
    torch.testing.assert_close(a[2], epoch0[2], rtol=0, atol=0)  # resumable
    assert not torch.equal(data.CropDataset(slices, masks, tile=32, seed=5)[0][0], epoch0[0][0])


def test_augmented_crops_keep_the_mask_on_the_image():
    slices, _ = _crop_set(seed=2)
    masks = (slices > 128).astype(np.uint8)                     # a pixelwise function of the image
    for rotation in ("right", "any-nearest"):
        ds = data.CropDataset(slices, masks, tile=32, augment=True, rotation=rotation, seed=6)
        for i in range(len(ds)):
            x, y = ds[i]
            np.testing.assert_array_equal(y[0].numpy(),
                                          (np.round(x[0].numpy() * 255) > 128).astype(np.float32))
    ds = data.CropDataset(slices, masks, tile=32, augment=True, seed=6)  # bilinear: edges may blur
    agree = np.mean([((ds[i][0][0].numpy() > 128.5 / 255) == (ds[i][1][0].numpy() > 0.5)).mean()
                     for i in range(len(ds))])
    assert agree > 0.8


def test_crops_for_the_pretext_task():
    slices, _ = _crop_set(seed=3)
    ds = data.CropDataset(slices, None, tile=32, augment=True, rotation="right", seed=1,
                          degrade=lambda image, rng: 255 - image)
    degraded, clean = ds[0]
    torch.testing.assert_close(degraded, 1 - clean, rtol=0, atol=1e-6)
    assert _find_window(data.pad_to_multiple(slices, 32), np.round(clean[0].numpy() * 255).astype(np.uint8)) \
        or _find_window(data.pad_to_multiple(slices, 32)[:, :, ::-1],
                        np.round(clean[0].numpy() * 255).astype(np.uint8)) \
        or any(_find_window(data.pad_to_multiple(slices, 32), np.ascontiguousarray(t))
               for t in _dihedral(np.round(clean[0].numpy() * 255).astype(np.uint8)))


class _Recording(torch.utils.data.Dataset):
    """Items 0..n-1 as tensors; records which were read; item `broken` raises."""

    def __init__(self, n, broken=None):
        self.n, self.broken, self.read = n, broken, []

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.broken:
            raise ValueError(f"item {i} is broken")
        self.read.append(i)
        return torch.tensor([float(i)])


def test_one_batch_ahead_yields_the_loaders_batches_in_its_order():
    ds = data.TileDataset(*_tiles(n=7), augment=True, seed=5)
    ds.set_epoch(2)
    loader = lambda: torch.utils.data.DataLoader(ds, batch_size=3, shuffle=True,  # noqa: E731
                                                 generator=torch.Generator().manual_seed(4))
    plain, ahead = list(loader()), list(data.one_batch_ahead(loader()))
    assert len(ahead) == len(plain) == 3
    for (x, y), (x2, y2) in zip(plain, ahead):
        torch.testing.assert_close(x2, x, rtol=0, atol=0)
        torch.testing.assert_close(y2, y, rtol=0, atol=0)


def test_one_batch_ahead_reads_the_next_batch_while_the_caller_holds_one():
    ds = _Recording(6)
    batches = data.one_batch_ahead(torch.utils.data.DataLoader(ds, batch_size=2))
    first = next(batches)
    assert first.flatten().tolist() == [0.0, 1.0]
    deadline = time.monotonic() + 10
    while len(ds.read) < 4 and time.monotonic() < deadline:  # the second batch, unasked for
        time.sleep(0.01)
    assert ds.read[:4] == [0, 1, 2, 3]
    assert [b.flatten().tolist() for b in batches] == [[2.0, 3.0], [4.0, 5.0]]


def test_one_batch_ahead_raises_the_datasets_error_to_the_caller():
    batches = data.one_batch_ahead(torch.utils.data.DataLoader(_Recording(6, broken=3), batch_size=2))
    assert next(batches).flatten().tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="item 3 is broken"):
        next(batches)
