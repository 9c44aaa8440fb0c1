"""Tests for stitch.py: the overlap-tile layout of thesis §4.2 (Fig. 4.2, 4.3) and full-slice inference."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from stitch import model_predict_fn, predict_full, predict_tiled, tile_layout

SIZES = [(768, 1024), (1334, 1553), (256, 256), (300, 200), (100, 70), (257, 129), (129, 385)]


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _image(H, W, seed=0):
    return np.random.default_rng(seed).random((H, W), dtype=np.float32)  # (H, W) float32 in [0, 1)


@pytest.mark.ex8
@pytest.mark.parametrize("H, W", SIZES)
def test_identity_round_trip_is_exact(H, W):
    image = _image(H, W)
    out = predict_tiled(lambda batch: batch.copy(), image)
    assert out.dtype == np.float32 and out.shape == (H, W)
    assert np.array_equal(out, image)


@pytest.mark.ex8
@pytest.mark.parametrize("window, keep", [(64, 32), (64, 48), (32, 8), (16, 16)])
@pytest.mark.parametrize("H, W", [(100, 70), (257, 129), (31, 97)])
def test_identity_round_trip_other_window_sizes(H, W, window, keep):
    image = _image(H, W, seed=1)
    out = predict_tiled(lambda batch: batch.copy(), image, window=window, keep=keep, batch_size=5)
    assert np.array_equal(out, image)


@pytest.mark.ex8
@pytest.mark.parametrize("size", [768, 1024, 1334, 1553, 256, 300, 200, 100, 70, 257, 129, 385, 128, 255])
def test_padding_and_window_count_follow_the_two_cases(size):
    """§4.2: 64 px each side when divisible by 128, else the least padding to a multiple of 128."""
    tiles, ((top, bottom), _) = tile_layout(size, 128)
    if size % 128 == 0:
        assert (top, bottom) == (64, 64)
        padded = size + 128
    else:
        padded = max(256, math.ceil(size / 128) * 128)
        assert top + bottom == padded - size and top - bottom in (0, 1)  # as even as possible
    assert len(tiles) == (padded - 256) // 128 + 1  # 256 windows at stride 128 across the padded axis
    assert tiles[-1].window[2] == padded


@pytest.mark.ex8
@pytest.mark.parametrize("H, W", SIZES)
def test_every_pixel_comes_from_exactly_one_window(H, W):
    tiles, _ = tile_layout(H, W)
    calls = []

    def window_id(batch):  # every window answers with its own id + 1, in call order
        ids = np.arange(len(calls), len(calls) + len(batch)) + 1
        calls.extend(ids)
        return np.broadcast_to(ids[:, None, None], batch.shape).astype(np.float32)

    out = predict_tiled(window_id, _image(H, W))
    assert len(calls) == len(tiles)
    assert set(np.unique(out)) == set(float(i) for i in calls)  # no NaN left: every pixel written
    area = 0
    for k, tile in enumerate(tiles):
        rows, cols = np.nonzero(out == k + 1)
        top, left, bottom, right = rows.min(), cols.min(), rows.max() + 1, cols.max() + 1
        assert len(rows) == (bottom - top) * (right - left)  # the region is one filled rectangle
        assert (top, left, bottom, right) == tile.kept
        area += len(rows)
    assert area == H * W  # disjoint rectangles that cover the image: a partition


@pytest.mark.ex8
@pytest.mark.parametrize("H, W", [(768, 1024), (1334, 1553), (300, 200), (257, 129), (129, 385)])
def test_kept_regions_are_window_centres_away_from_the_border(H, W):
    window, keep, margin = 256, 128, 64
    tiles, _ = tile_layout(H, W)
    rows_of_windows = sorted({t.window[0] for t in tiles})
    cols_of_windows = sorted({t.window[1] for t in tiles})

    def position(batch):  # each pixel's (row, col) inside its window, coded as row * window + col
        pos = np.arange(window * window, dtype=np.float32).reshape(window, window)
        return np.broadcast_to(pos, batch.shape).copy()

    out = predict_tiled(position, _image(H, W))
    row_in_window, col_in_window = np.divmod(out.astype(np.int64), window)
    for tile in tiles:
        top, left, bottom, right = tile.kept
        r, c = row_in_window[top:bottom, left:right], col_in_window[top:bottom, left:right]
        # the kept pixels form a contiguous block of the window, starting at the stated offset
        assert np.array_equal(r, np.broadcast_to(np.arange(bottom - top)[:, None] + tile.offset[0], r.shape))
        assert np.array_equal(c, np.broadcast_to(np.arange(right - left)[None, :] + tile.offset[1], c.shape))
        inner_row = tile.window[0] not in (rows_of_windows[0], rows_of_windows[-1])
        inner_col = tile.window[1] not in (cols_of_windows[0], cols_of_windows[-1])
        if inner_row:
            assert bottom - top == keep and r.min() == margin and r.max() == margin + keep - 1
        else:  # border relevant patches grow (Fig. 4.3), never shrink, when the image is >= 128
            assert keep <= bottom - top < keep + 2 * margin or H < keep
        if inner_col:
            assert right - left == keep and c.min() == margin and c.max() == margin + keep - 1
        else:
            assert keep <= right - left < keep + 2 * margin or W < keep


@pytest.mark.parametrize("batch_size", [1, 3, 8])
def test_batches_respect_batch_size(batch_size):
    H, W = 300, 520
    shapes = []

    def record(batch):
        shapes.append((batch.shape, batch.dtype))
        return batch

    predict_tiled(record, _image(H, W), batch_size=batch_size)
    n_windows = len(tile_layout(H, W)[0])
    assert sum(shape[0] for shape, _ in shapes) == n_windows
    assert all(shape[1:] == (256, 256) and dtype == np.float32 for shape, dtype in shapes)
    assert all(shape[0] == batch_size for shape, _ in shapes[:-1]) and 1 <= shapes[-1][0][0] <= batch_size


def _conv3x3_reference(image, weight, bias, border):
    """float64 3x3 cross-correlation on `image` padded by 1 with the given np.pad mode."""
    H, W = image.shape
    padded = np.pad(image.astype(np.float64), 1, mode=border)  # (H + 2, W + 2) float64
    out = np.full((H, W), float(bias))  # (H, W) float64
    for i in range(3):
        for j in range(3):
            out += weight[i, j] * padded[i:i + H, j:j + W]
    return out


def _fixed_conv(kernel_size, seed=0):
    conv = nn.Conv2d(1, 1, kernel_size, padding=kernel_size // 2)
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        conv.weight.copy_(torch.from_numpy(rng.normal(size=conv.weight.shape)))
        conv.bias.fill_(0.3)
    return conv


def test_predict_full_equals_direct_convolution():
    conv = _fixed_conv(3)
    image = _image(32, 48)  # already a multiple of 16: no padding, zero 'same' border as the model
    expected = _sigmoid(_conv3x3_reference(image, conv.weight[0, 0].detach().double().numpy(), 0.3,
                                           "constant"))
    out = predict_full(conv, image)
    assert out.dtype == np.float32 and out.shape == image.shape
    np.testing.assert_allclose(out, expected, atol=1e-6)


class _RecordingIdentity(nn.Module):
    """Returns its input as logits and remembers what it was given."""

    def forward(self, x):
        self.seen = x.clone()
        return x


def test_predict_full_pads_mirrors_and_crops_odd_sizes():
    model = _RecordingIdentity().train()
    image = _image(37, 50)
    out = predict_full(model, image)
    np.testing.assert_allclose(out, _sigmoid(image.astype(np.float64)), atol=1e-6)
    assert model.training  # the caller's mode is kept
    seen = model.seen[0, 0].numpy()
    assert seen.shape == (48, 64)
    top, left = 6, 7  # 11 -> 6 + 5 rows, 14 -> 7 + 7 columns, the odd pixel on top
    assert np.array_equal(seen[top:top + 37, left:left + 50], image)
    assert np.array_equal(seen[top - 1::-1, left:left + 50], image[:top])  # mirrored, edge row repeated
    assert np.array_equal(seen[top:top + 37, left + 50:], image[:, :-8:-1])


class _TwoHeads(nn.Module):
    """Like the Attention Y-Net: (segmentation logits, reconstruction)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(2.0))

    def forward(self, x):
        return self.scale * x - 1.0, torch.zeros_like(x)


def test_tuple_outputs_use_the_segmentation_head():
    model = _TwoHeads()
    batch = np.stack([_image(16, 16, seed=s) for s in range(3)])  # (3, 16, 16) float32
    expected = _sigmoid(2.0 * batch.astype(np.float64) - 1.0)
    np.testing.assert_allclose(model_predict_fn(model)(batch), expected, atol=1e-6)
    np.testing.assert_allclose(predict_full(model, batch[0]), expected[0], atol=1e-6)


def test_tiled_pointwise_model_equals_whole_image():
    conv = _fixed_conv(1, seed=2)
    image = _image(300, 200)
    w, b = conv.weight.item(), conv.bias.item()
    out = predict_tiled(model_predict_fn(conv), image, batch_size=3)
    np.testing.assert_allclose(out, _sigmoid(w * image.astype(np.float64) + b), atol=1e-6)


def test_tiled_conv_sees_true_neighbours_across_seams():
    """A 3x3 conv stitched from windows equals the conv of the mirror-padded whole image."""
    conv = _fixed_conv(3, seed=3)
    # rows: case 1 (64 + 64), columns: case 2 (42 + 42); no kept pixel on a window edge
    image = _image(384, 300)
    expected = _sigmoid(_conv3x3_reference(image, conv.weight[0, 0].detach().double().numpy(), 0.3,
                                           "symmetric"))
    out = predict_tiled(model_predict_fn(conv), image)
    np.testing.assert_allclose(out, expected, atol=1e-5)


@pytest.mark.parametrize("arch", ["unet", "attention_ynet"])
def test_a_cnn_predicts_a_montage_window_by_window_as_in_one_pass(arch, one_thread):
    """Windows of the padded slice, kept 128 px inside their inner borders (more than the 94 px receptive
    field) and on the poolings' 16-px grid, give the one-pass map to float rounding."""
    import models

    torch.manual_seed(0)
    model = models.build_model(arch, filters=4, batch_norm=True).eval()
    for module in model.modules():  # BatchNorm statistics other than the initial 0 and 1
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5), module.running_var.uniform_(0.5, 2.0)
    image = np.random.default_rng(0).random((300, 650), dtype=np.float32)  # padded to 304 x 656
    whole = predict_full(model, image)
    tiled = predict_full(model, image, max_pixels=1000, window=288, margin=128)  # windows of 288 x 288
    assert tiled.shape == whole.shape == image.shape
    np.testing.assert_allclose(tiled, whole, rtol=0, atol=2e-6)
    cut = predict_full(model, image, max_pixels=1000, window=288 - 64, margin=96 - 64)  # inside the field
    assert np.abs(cut - whole).max() > 1e-4  # too small a margin shows at the seams: the test can fail


def test_cnn_windows_cover_each_pixel_once_and_start_on_the_grid():
    from stitch import cnn_windows

    for size in (16, 2048, 2064, 5000 - 5000 % 16, 20000):
        spans = cnn_windows(size)
        kept = np.zeros(size, int)
        for start, end, k0, k1 in spans:
            assert start % 16 == 0 and end - start <= 2048 and start <= k0 < k1 <= end
            assert k0 - start >= (128 if start else 0) and end - k1 >= (128 if end < size else 0)
            kept[k0:k1] += 1
        assert (kept == 1).all(), size
