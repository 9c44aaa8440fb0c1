"""Tests for degrade.py: each degradation's defining property on closed-form inputs, kernels against
their formulas, convolution against torch, histogram matching and CLAHE against hand-derived values.
Optional oracles (OpenCV, scikit-image) run only where those libraries are installed."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import degrade as dg


def _rng(seed=0):
    return np.random.default_rng(seed)


def _delta(side=41, value=255):
    image = np.zeros((side, side), np.uint8)
    image[side // 2, side // 2] = value
    return image


def _centred(kernel, side):
    """The kernel placed at the centre of a side x side zero image."""
    out = np.zeros((side, side))
    kh, kw = kernel.shape
    top, left = side // 2 - kh // 2, side // 2 - kw // 2
    out[top:top + kh, left:left + kw] = kernel
    return out


# ----- kernels -----

@pytest.mark.parametrize("sigma", [0.5, 1.5, 3.0])
def test_gaussian_kernel_closed_form(sigma):
    radius = int(4.0 * sigma + 0.5)
    raw = [math.exp(-(i * i) / (2 * sigma * sigma)) for i in range(-radius, radius + 1)]
    expected = np.array(raw) / math.fsum(raw)
    np.testing.assert_allclose(dg.gaussian_kernel1d(sigma), expected, rtol=1e-12, atol=1e-15)


def test_every_kernel_sums_to_one():
    kernels = [dg.gaussian_kernel1d(s) for s in (0.7, 1.5, 3.0)]
    kernels += [dg.disk_kernel(r, a) for r, a in ((3, 0.1), (4, 0.5), (6, 0.5), (10, 0.5))]
    kernels += [dg.motion_kernel(15, a, d) for a in (0, 17, 45, 90, 200, 333) for d in (-1, -0.3, 0, 1)]
    for kernel in kernels:
        assert abs(kernel.sum() - 1.0) < 1e-12
        assert kernel.min() >= 0.0


def test_disk_kernel_matches_its_definition():
    """Flat disk r = 4 on a 17 x 17 grid, normalised, then a 3 x 3 Gaussian (sigma 0.5) by loops."""
    coords = range(-8, 9)
    disk = np.array([[1.0 if x * x + y * y <= 16 else 0.0 for x in coords] for y in coords])
    disk /= disk.sum()
    g = np.array([math.exp(-1 / (2 * 0.25)), 1.0, math.exp(-1 / (2 * 0.25))])
    g /= g.sum()
    expected = np.zeros((17, 17))
    for y in range(17):
        for x in range(17):
            for a in (-1, 0, 1):
                for b in (-1, 0, 1):
                    yy, xx = _reflect101(y + a, 17), _reflect101(x + b, 17)
                    expected[y, x] += g[a + 1] * g[b + 1] * disk[yy, xx]
    np.testing.assert_allclose(dg.disk_kernel(4, 0.5), expected / expected.sum(), atol=1e-15)
    assert dg.disk_kernel(4, 0.5)[8, 8 + 6] == 0.0  # nothing beyond radius + 1


def _reflect101(i, n):
    return -i if i < 0 else (2 * (n - 1) - i if i >= n else i)


def test_motion_kernel_direction():
    k = 15
    uniform = dg.motion_kernel(k, 0.0, 0.0)
    expected = np.zeros((k, k))
    expected[:, k // 2] = 1.0 / k
    np.testing.assert_allclose(uniform, expected, atol=1e-15)
    np.testing.assert_allclose(dg.motion_kernel(k, 90.0, 0.0), expected.T, atol=1e-12)
    tilted = dg.motion_kernel(k, 0.0, 1.0)[:, k // 2]  # rises toward the top end of the line
    assert np.all(np.diff(tilted) < 0) and tilted[-1] == 0.0
    np.testing.assert_allclose(np.diff(tilted), np.diff(tilted)[0], atol=1e-15)  # linear
    flipped = dg.motion_kernel(k, 0.0, 1.0)[::-1]
    np.testing.assert_allclose(dg.motion_kernel(k, 0.0, -1.0), flipped, atol=1e-15)
    turned = dg.motion_kernel(k, 90.0, 1.0)  # clockwise: the heavy top end goes to the right
    assert np.all(np.diff(turned[k // 2]) > 0) and abs(turned[k // 2].sum() - 1.0) < 1e-9
    # Turning by 180 degrees swaps the two ends of the line, i.e. negates the direction.
    turned_back = dg.motion_kernel(k, 30.0, -0.5)
    np.testing.assert_allclose(dg.motion_kernel(k, 210.0, 0.5), turned_back, atol=1e-12)
    for angle in (0.0, 33.0, 120.0):  # uniform weights balance on the centre
        kernel = dg.motion_kernel(k, angle, 0.0)
        yy, xx = np.mgrid[0:k, 0:k]
        assert abs((kernel * yy).sum() - 7) < 1e-9 and abs((kernel * xx).sum() - 7) < 1e-9


def test_motion_kernel_even_size_made_odd():
    assert dg.motion_kernel(14, 10.0, 0.0).shape == (15, 15)


# ----- convolution and resizing -----

@pytest.mark.parametrize("border, torch_mode", [("edge", "replicate"), ("reflect", "reflect")])
def test_convolve2d_matches_torch(border, torch_mode):
    rng = _rng(1)
    image, kernel = rng.random((23, 31)), rng.random((5, 7))
    x = torch.from_numpy(image)[None, None]
    padded = F.pad(x, (3, 3, 2, 2), mode=torch_mode)
    flipped = torch.from_numpy(kernel[::-1, ::-1].copy())[None, None]  # conv2d correlates
    expected = F.conv2d(padded, flipped)[0, 0].numpy()
    np.testing.assert_allclose(dg.convolve2d(image, kernel, border), expected, rtol=1e-12, atol=1e-12)


def test_convolve2d_symmetric_border_is_circular_on_the_mirrored_image():
    """'symmetric' (d c b a | a b c d) = circular convolution of the image tiled with its mirror images."""
    rng = _rng(1)
    image, kernel = rng.random((23, 31)), rng.random((5, 7))
    mirrored = np.block([[image, image[:, ::-1]], [image[::-1], image[::-1, ::-1]]])  # period 2H x 2W
    x = torch.from_numpy(mirrored)[None, None]
    flipped = torch.from_numpy(kernel[::-1, ::-1].copy())[None, None]  # conv2d correlates
    expected = F.conv2d(F.pad(x, (3, 3, 2, 2), mode="circular"), flipped)[0, 0, :23, :31].numpy()
    np.testing.assert_allclose(dg.convolve2d(image, kernel, "symmetric"), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("border", ["edge", "reflect", "symmetric"])
def test_convolve_separable_equals_outer_product(border):
    rng = _rng(2)
    image, k_row, k_col = rng.random((19, 26)), rng.random(7), rng.random(3)
    expected = dg.convolve2d(image, np.outer(k_col, k_row), border)
    np.testing.assert_allclose(dg.convolve_separable(image, k_row, k_col, border), expected, rtol=1e-12)


def test_blur_of_delta_is_its_kernel():
    side = 41
    g = dg.gaussian_kernel1d(3.0)
    gauss2d = np.outer(g, g)
    blurred = dg.convolve_separable(_delta(side, 1), g, g, "edge")
    np.testing.assert_allclose(blurred, _centred(gauss2d, side), atol=1e-15)
    np.testing.assert_array_equal(dg.gaussian_blur(_delta(side)), np.rint(255 * _centred(gauss2d, side)))
    disk = dg.disk_kernel(4, 0.5)
    blurred = dg.convolve2d(_delta(side, 1), disk, "reflect")
    np.testing.assert_allclose(blurred, _centred(disk, side), atol=1e-15)
    np.testing.assert_array_equal(dg.defocus_blur(_delta(side)), np.rint(255 * _centred(disk, side)))
    line = dg.motion_kernel(15, 37.0, 0.6)
    blurred = dg.convolve2d(_delta(side, 1), line, "reflect")
    np.testing.assert_allclose(blurred, _centred(line, side), atol=1e-15)
    blurred = dg.motion_blur(_delta(side), _rng(), angle=37.0, direction=0.6)
    np.testing.assert_array_equal(blurred, np.rint(255 * _centred(line, side)))


def test_resize_bilinear_closed_forms():
    rng = _rng(3)
    image = rng.random((16, 24))
    # Down by 4: each output centre sits between input pixels 4o + 1 and 4o + 2.
    expected = 0.25 * (image[1::4, 1::4] + image[2::4, 1::4] + image[1::4, 2::4] + image[2::4, 2::4])
    np.testing.assert_allclose(dg.resize_bilinear(image, (4, 6)), expected, rtol=1e-12)
    # Up by 4 in 1-D: linear interpolation at (o + 0.5) / 4 - 0.5, positions mirrored about 0 and n - 1.
    row = rng.random((1, 5))
    n = row.shape[1]
    positions = (np.arange(4 * n) + 0.5) / 4 - 0.5
    positions = np.abs(positions)
    positions = np.where(positions > n - 1, 2 * (n - 1) - positions, positions)
    expected = np.interp(positions, np.arange(n), row[0])
    np.testing.assert_allclose(dg.resize_bilinear(row, (1, 4 * n))[0], expected)
    # Away from the border it is torch's bilinear (align_corners=False).
    x = torch.from_numpy(image)[None, None]
    up = F.interpolate(x, size=(64, 96), mode="bilinear", align_corners=False)[0, 0].numpy()
    np.testing.assert_allclose(dg.resize_bilinear(image, (64, 96))[2:-2, 2:-2], up[2:-2, 2:-2], rtol=1e-10)


# ----- the eight degradations -----

@pytest.mark.ex10
def test_gaussian_noise_std():
    image = np.full((128, 128), 128, np.uint8)
    diff = dg.gaussian_noise(image, _rng()).astype(np.float64) - 128
    assert abs(diff.std() - 0.15 * 255) < 1.0 and abs(diff.mean()) < 1.0


def test_pixel_dropout_fraction_and_zeros_only_where_set():
    image = _rng(4).integers(1, 256, (64, 64)).astype(np.uint8)
    fractions = []
    for seed in range(60):
        out = dg.pixel_dropout(image, _rng(seed))
        dropped = out == 0
        np.testing.assert_array_equal(out[~dropped], image[~dropped])
        fractions.append(dropped.mean())
    fractions = np.array(fractions)
    assert fractions.max() < 0.23 and abs(fractions.mean() - 0.1) < 0.02 and fractions.min() < 0.03


@pytest.mark.ex10
def test_cutout_one_box_is_a_clipped_square():
    image = np.full((50, 50), 200, np.uint8)
    interior = 0
    for seed in range(60):
        zeros = dg.cutout(image, _rng(seed), n_min=1, n_max=1) == 0
        rows, cols = np.nonzero(zeros)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert zeros[top:bottom, left:right].all() and zeros.sum() == (bottom - top) * (right - left)
        assert bottom - top <= 10 and right - left <= 10  # 20% of 50
        if top > 0 and left > 0 and bottom < 50 and right < 50:
            assert (bottom - top, right - left) == (10, 10)
            interior += 1
    assert interior >= 20


@pytest.mark.ex10
def test_cutout_is_one_to_five_boxes():
    image, box = np.full((100, 100), 200, np.uint8), 20
    for seed in range(30):
        out = dg.cutout(image, _rng(seed))
        zeros = out == 0
        assert np.all(out[~zeros] == 200) and box * box // 4 <= zeros.sum() <= 5 * box * box
        # Every zero pixel lies in a box x box window that is all zero, counting outside as zero.
        padded = np.pad(zeros, box - 1, constant_values=True).astype(np.int64)
        s = np.pad(padded.cumsum(0).cumsum(1), ((1, 0), (1, 0)))
        full = (s[box:, box:] - s[:-box, box:] - s[box:, :-box] + s[:-box, :-box]) == box * box
        c = np.pad(full.astype(np.int64).cumsum(0).cumsum(1), ((box, 0), (box, 0)))
        covered = (c[box:, box:] - c[:-box, box:] - c[box:, :-box] + c[:-box, :-box]) > 0
        np.testing.assert_array_equal(covered[box - 1:box - 1 + 100, box - 1:box - 1 + 100], zeros)


def test_salt_pepper_values_fraction_and_blocks():
    image = np.full((64, 64), 128, np.uint8)
    fractions, salt = [], []
    for seed in range(200):
        out = dg.salt_pepper(image, _rng(seed))
        changed = out != 128
        assert set(np.unique(out[changed])) <= {0, 255}
        assert len(np.unique(changed, axis=0)) <= 16 and np.unique(changed, axis=1).shape[1] <= 16
        fractions.append(changed.mean())
        salt.extend(out[changed] == 255)
    assert abs(np.mean(fractions) - 0.2) < 0.02 and abs(np.mean(salt) - 0.5) < 0.02
    beta = dg.salt_pepper(image, _rng(1), p=0.9, binary=False)
    assert len(np.unique(beta[beta != 128])) > 2


def test_low_resolution_keeps_shape_constant_and_smooths():
    for shape in ((256, 256), (50, 66)):
        constant = np.full(shape, 90, np.uint8)
        np.testing.assert_array_equal(dg.low_resolution(constant, _rng(), noise_var=0.0), constant)
    noise = _rng(5).integers(0, 256, (64, 64)).astype(np.uint8)
    out = dg.low_resolution(noise, _rng())
    assert out.shape == noise.shape
    def energy(a):  # mean squared difference of neighbours: the high-frequency part
        a = a.astype(np.float64)
        return np.mean(np.diff(a, axis=0) ** 2) + np.mean(np.diff(a, axis=1) ** 2)

    assert energy(out) < energy(noise) / 20


def test_low_resolution_matches_torch_away_from_border():
    """noise_var = 0: Gaussian pre-blur (sigma 1.5, mirror border), bilinear down and up by 4."""
    image = _rng(20).integers(0, 256, (64, 48)).astype(np.uint8)
    x = torch.from_numpy(image.astype(np.float64))[None, None]
    t = torch.arange(-6, 7, dtype=torch.float64)
    g = torch.exp(-t ** 2 / (2 * 1.5 ** 2))
    g = (g / g.sum())[None, None]
    blurred = F.conv2d(F.conv2d(F.pad(x, (6, 6, 6, 6), mode="reflect"), g[..., None]), g[:, :, None])
    small = F.interpolate(blurred, size=(16, 12), mode="bilinear", align_corners=False)
    up = F.interpolate(small, size=(64, 48), mode="bilinear", align_corners=False)[0, 0].numpy()
    out = dg.low_resolution(image, _rng(), noise_var=0.0)
    np.testing.assert_array_equal(out[2:-2, 2:-2], np.clip(np.rint(up), 0, 255)[2:-2, 2:-2])


def test_all_degradations_keep_dtype_shape_and_are_deterministic():
    image = _rng(6).integers(0, 256, (37, 45)).astype(np.uint8)
    before = image.copy()
    for name, fn in dg.DEGRADATIONS.items():
        out = fn(image, _rng(3))
        assert out.dtype == np.uint8 and out.shape == image.shape, name
        np.testing.assert_array_equal(out, fn(image, _rng(3)), err_msg=name)
        if name not in ("gaussian_blur", "defocus_blur"):
            assert not np.array_equal(out, fn(image, _rng(4))), name
    np.testing.assert_array_equal(image, before)  # inputs are never written


def test_blurs_refuse_a_parameter_passed_as_rng():
    """gaussian_blur(image, 1.0) would otherwise blur with the default sigma 3 without a word."""
    image = _rng(5).integers(0, 256, (16, 16)).astype(np.uint8)
    with pytest.raises(TypeError, match="sigma="):
        dg.gaussian_blur(image, 1.0)
    with pytest.raises(TypeError, match="radius="):
        dg.defocus_blur(image, 3)
    np.testing.assert_array_equal(dg.gaussian_blur(image, _rng(), sigma=1.0),
                                  dg.gaussian_blur(image, sigma=1.0))
    assert not np.array_equal(dg.gaussian_blur(image, sigma=1.0), dg.gaussian_blur(image))


def test_random_degradation_draws_from_the_list():
    with pytest.raises(ValueError, match="gaussian_noise"):
        dg.random_degradation(["blur_everything"])
    with pytest.raises(ValueError):
        dg.random_degradation([])
    image = _rng(7).integers(0, 256, (32, 32)).astype(np.uint8)
    options = {"gaussian_blur": dg.gaussian_blur(image), "defocus_blur": dg.defocus_blur(image)}
    degrade, rng, seen = dg.random_degradation(list(options)), _rng(8), set()
    for _ in range(30):
        out = degrade(image, rng)
        seen |= {name for name, expected in options.items() if np.array_equal(out, expected)}
    assert seen == set(options)
    only_cutout = dg.random_degradation("cutout")
    np.testing.assert_array_equal(only_cutout(image, _rng(9)), dg.cutout(image, _rng(9)))


# ----- histogram matching (Appendix A) -----

def _hist(image):
    return np.bincount(image.ravel(), minlength=256) / image.size


@pytest.mark.ex11
def test_match_histogram_to_own_histogram_is_identity():
    image = (_rng(10).integers(0, 60, (40, 50)) * 4 + 3).astype(np.uint8)  # gaps between levels
    np.testing.assert_array_equal(dg.match_histogram(image, _hist(image)), image)


@pytest.mark.ex11
def test_match_histogram_follows_target_cdf():
    source = _rng(11).integers(0, 256, (128, 128)).astype(np.uint8)
    target = np.zeros(256)
    target[30:201] = np.minimum(np.arange(171), np.arange(171)[::-1]) + 1.0  # a triangle
    out = dg.match_histogram(source, target / target.sum())
    assert np.max(np.abs(np.cumsum(_hist(out)) - np.cumsum(target / target.sum()))) < 0.02
    order = np.argsort(source.ravel(), kind="stable")
    assert np.all(np.diff(out.ravel()[order].astype(int)) >= 0)  # the mapping is monotone


def _matched_with_line_zeros(tissue, target):
    """The fix by hand: the tissue matched without the fix beside exactly max(0, 2 c1 - c2) zeros."""
    counts = np.bincount(tissue.ravel(), minlength=256)
    n_zero = max(0, 2 * counts[1] - counts[2])
    stand_in = np.concatenate([np.zeros(n_zero, np.uint8), tissue.ravel()])[None]
    return dg.match_histogram(stand_in, target)[0, n_zero:].reshape(tissue.shape)


@pytest.mark.ex11
def test_match_histogram_zero_padding_fix():
    rng = _rng(12)
    tissue = rng.integers(1, 120, (40, 60)).astype(np.uint8)
    image = np.pad(tissue, 20)  # black padding dominates bin 0
    target = np.zeros(256)
    target[60:250] = 1.0 / 190
    out = dg.match_histogram(image, target, fix_zero_peak=True)
    assert np.all(out[image == 0] == 0) and np.all(out[image > 0] >= 60)
    np.testing.assert_array_equal(out[20:-20, 20:-20], _matched_with_line_zeros(tissue, target))
    gappy = np.pad(tissue * 2 + 1, 20)  # levels 0, 3, 5, ...: no 1 or 2, so the zero count is 0
    inner = dg.match_histogram(gappy[20:-20, 20:-20], target)
    np.testing.assert_array_equal(dg.match_histogram(gappy, target, fix_zero_peak=True)[20:-20, 20:-20],
                                  inner)
    black = np.zeros((8, 8), np.uint8)
    np.testing.assert_array_equal(dg.match_histogram(black, target, fix_zero_peak=True), black)


def test_mean_histogram():
    rng = _rng(13)
    a = rng.integers(0, 256, (20, 30)).astype(np.uint8)
    b = rng.integers(50, 90, (11, 7)).astype(np.uint8)  # a different size weighs the same
    hist_a, hist_b = (np.histogram(im, bins=256, range=(0, 256))[0] / im.size for im in (a, b))
    expected = (hist_a + hist_b) / 2
    np.testing.assert_allclose(dg.mean_histogram([a, b], fix_zero_peak=False), expected, rtol=1e-12)
    padded = np.zeros(1000, np.uint8)  # 1000 pixels: 600 padding, 30 ones, 20 twos, 350 of 100
    padded[600:630], padded[630:650], padded[650:] = 1, 2, 100
    hist = dg.mean_histogram([padded.reshape(20, 50)])
    assert abs(hist.sum() - 1.0) < 1e-12
    np.testing.assert_allclose(hist[[0, 1, 2, 100]], np.array([40, 30, 20, 350]) / 440, rtol=1e-12)
    padded[600:630] = 5  # no ones left: the line through (1, 0) and (2, 20) is negative at 0
    assert dg.mean_histogram([padded.reshape(20, 50)])[0] == 0.0


# ----- CLAHE -----

def _opencv_constant_lut_value(value, area, clip_limit=2.0):
    """OpenCV's LUT entry for a tile filled with one grey level, by plain loops."""
    hist = [0] * 256
    hist[value] = area
    limit = max(int(clip_limit * area / 256), 1)
    clipped = sum(max(h - limit, 0) for h in hist)
    hist = [min(h, limit) + clipped // 256 for h in hist]
    residual = clipped % 256
    if residual:
        i, step = 0, max(256 // residual, 1)
        while i < 256 and residual > 0:
            hist[i] += 1
            i, residual = i + step, residual - 1
    return round(sum(hist[:value + 1]) * 255 / area)


@pytest.mark.parametrize("shape, tile_area",
                         [((64, 64), 64), ((128, 96), 192), ((50, 70), 63), ((64, 70), 81)])
def test_clahe_constant_image_stays_constant(shape, tile_area):
    for value in (0, 77, 255):
        out = dg.clahe(np.full(shape, value, np.uint8))
        assert out.dtype == np.uint8 and out.shape == shape
        assert np.all(out == _opencv_constant_lut_value(value, tile_area))


def test_clahe_increases_local_contrast_on_a_ramp():
    rng = _rng(14)
    ramp = 120 + 10 * np.linspace(0, 1, 128)[None, :] + rng.normal(0, 2, (128, 128))
    image = np.clip(np.rint(ramp), 0, 255).astype(np.uint8)
    out = dg.clahe(image)
    std = lambda a: a.reshape(8, 16, 8, 16).std(axis=(1, 3))
    assert np.all(std(out.astype(float)) > 2 * std(image.astype(float)))


@pytest.mark.parametrize("clip_limit", [0.0, 1e6])
def test_clahe_without_clipping_is_tile_equalisation_at_tile_centres(clip_limit):
    rng = _rng(15)
    image = np.zeros((64, 64), np.uint8)
    for ty in range(4):
        for tx in range(4):  # each tile its own grey-level range
            tile = rng.integers(10 * ty, 100 + 40 * tx, (16, 16))
            image[16 * ty:16 * ty + 16, 16 * tx:16 * tx + 16] = tile
    out = dg.clahe(image, clip_limit=clip_limit, tile_grid=(4, 4))
    luts = np.zeros((4, 4, 256))
    for ty in range(4):
        for tx in range(4):
            tile = image[16 * ty:16 * ty + 16, 16 * tx:16 * tx + 16]
            luts[ty, tx] = np.rint(np.cumsum(np.histogram(tile, bins=256, range=(0, 256))[0]) * 255 / 256)
            y, x = 16 * ty + 8, 16 * tx + 8  # the tile centre in OpenCV's x / tile - 0.5 rule
            assert out[y, x] == luts[ty, tx, image[y, x]]
    # A quarter of the way from the centre of tile (1, 1) to that of tile (1, 2): a 3:1 blend.
    y, x = 24, 28
    assert out[y, x] == np.rint(0.75 * luts[1, 1, image[y, x]] + 0.25 * luts[1, 2, image[y, x]])


def test_clahe_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = _rng(16)
    for shape in ((64, 64), (50, 70), (37, 64), (100, 30)):
        image = np.clip(rng.normal(100, 25, shape), 0, 255).astype(np.uint8)
        for clip_limit in (2.0, 40.0):
            expected = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(8, 8)).apply(image)
            assert np.abs(dg.clahe(image, clip_limit).astype(int) - expected).max() <= 1


# ----- optional oracles -----

def test_disk_and_motion_blur_match_opencv():
    cv2 = pytest.importorskip("cv2")
    coords = np.arange(-8, 9)
    disk = (coords[:, None] ** 2 + coords[None, :] ** 2 <= 16).astype(np.float32)
    expected = cv2.GaussianBlur(disk / disk.sum(), ksize=(3, 3), sigmaX=0.5)  # imagecorruptions' disk()
    np.testing.assert_allclose(dg.disk_kernel(4, 0.5), expected / expected.sum(), atol=1e-6)
    image = _rng(17).integers(0, 256, (48, 48)).astype(np.uint8)
    for kernel in (dg.disk_kernel(4, 0.5), dg.motion_kernel(15, 123.0, 0.4)):
        correlated = cv2.filter2D(image.astype(np.float64), -1, kernel[::-1, ::-1].copy())
        np.testing.assert_allclose(dg.convolve2d(image, kernel), correlated, atol=1e-6)


def test_gaussian_blur_matches_skimage():
    filters = pytest.importorskip("skimage.filters")
    image = _rng(21).integers(0, 256, (40, 52)).astype(np.uint8)
    expected = filters.gaussian(image.astype(np.float64), sigma=3, mode="nearest", truncate=4.0,
                                preserve_range=True)
    g = dg.gaussian_kernel1d(3.0)
    np.testing.assert_allclose(dg.convolve_separable(image, g, g, "edge"), expected, atol=1e-9)


def test_low_resolution_matches_skimage_rescale():
    transform = pytest.importorskip("skimage.transform")
    image = _rng(18).integers(0, 256, (64, 64)).astype(np.uint8)
    x = image.astype(np.float64) / image.max() * image.max()
    expected = transform.rescale(transform.rescale(x, 0.25, order=1, anti_aliasing=True), 4, order=1)
    out = dg.low_resolution(image, _rng(), noise_var=0.0).astype(np.float64)
    assert np.abs(out - np.rint(expected)).max() <= 1


@pytest.mark.ex11
def test_match_histogram_matches_skimage():
    exposure = pytest.importorskip("skimage.exposure")
    rng = _rng(19)
    source = rng.integers(0, 256, (40, 40)).astype(np.uint8)
    reference = np.clip(rng.normal(150, 30, (50, 50)), 0, 255).astype(np.uint8)
    expected = np.rint(np.asarray(exposure.match_histograms(source, reference), np.float64))
    diff = np.abs(dg.match_histogram(source, _hist(reference)).astype(np.float64) - expected)
    assert diff.max() <= 1 and np.mean(diff == 0) > 0.99  # only rounding ties may differ
