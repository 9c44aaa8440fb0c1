"""Image degradations for the denoising pretext task, and the domain-adaptation preprocessing.

Thesis: §3.3 (self-supervised learning), Fig. 3.2, Table 5.5; Appendix A (histogram matching),
Table 1 of Appendix A (CLAHE and HM baselines).

Pretext task (§3.3): the network gets a degraded tile and must give back the clean one (MSE). The
eight degradations redo what the thesis code called: imgaug's Cutout, AdditiveGaussianNoise,
CoarseSaltAndPepper, MotionBlur and Dropout, imgcorruptlike's DefocusBlur (severity 2),
scikit-image's `gaussian` (sigma 3) and the code's `emulate_LR` (noise, then scikit-image `rescale`
down and up, bilinear). Each is pure: `(image (H, W) uint8, rng, **params) -> (H, W) uint8`.
Where we differ from the thesis code: results are rounded (the code truncated with astype(uint8)
after the Gaussian filter, defocus blur and low resolution, a -0.5 grey-level bias); salt and
pepper writes exactly 0 or 255, as its name says (imgaug's `binary=False` draws Beta(0.5, 0.5) * 255);
low resolution returns exactly (H, W); the motion kernel is not quantised to uint8; blurs are
true convolutions (OpenCV correlates, which only turns the random motion angle by 180 degrees).
Appendix A: mean target histogram with the zero-padding fix, CDF matching, and OpenCV's CLAHE.

Legend: H x W image, k x k kernel; images are uint8 in [0, 255] unless a comment says otherwise.
"""
from typing import Callable, Iterable, Sequence, Union

import numpy as np

# NumPy pad names: replicate the edge; mirror without repeating it; mirror repeating it (data.py)
BORDERS = ("edge", "reflect", "symmetric")


def _to_uint8(image_f: np.ndarray) -> np.ndarray:
    """Round to the nearest grey level and clip to [0, 255]."""
    return np.clip(np.rint(image_f), 0, 255).astype(np.uint8)  # (H, W) uint8


def _check(image: np.ndarray) -> None:
    assert image.dtype == np.uint8 and image.ndim == 2, f"need (H, W) uint8: {image.dtype} {image.shape}"


# ----- kernels and convolution -----

def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """exp(-x^2 / (2 sigma^2)) sampled on [-r, r], r = int(truncate * sigma + 0.5), summing to 1
    (scipy.ndimage's rule, which scikit-image's `gaussian` uses)."""
    if sigma <= 0:
        return np.ones(1)
    radius = int(truncate * sigma + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)  # (2r+1,) offsets in pixels
    kernel = np.exp(-0.5 * (x / sigma) ** 2)  # (2r+1,) float64 in (0, 1]
    return kernel / kernel.sum()


def disk_kernel(radius: float = 4, alias_blur: float = 0.5) -> np.ndarray:
    """imagecorruptions' disk(): the flat disk x^2 + y^2 <= radius^2 on a 17 x 17 grid (2r+1 when
    radius > 8), normalised, smoothed by a 3 x 3 (5 x 5) Gaussian of sigma alias_blur, sum 1."""
    half, ksize = (8, 3) if radius <= 8 else (int(radius), 5)
    x = np.arange(-half, half + 1, dtype=np.float64)
    disk = (x[:, None] ** 2 + x[None, :] ** 2 <= radius ** 2).astype(np.float64)  # (k, k) in {0, 1}
    t = np.arange(ksize) - ksize // 2
    smooth = np.exp(-t ** 2 / (2.0 * alias_blur ** 2))  # (ksize,) OpenCV getGaussianKernel
    smooth /= smooth.sum()
    kernel = convolve_separable(disk / disk.sum(), smooth, smooth, "reflect")  # cv2.GaussianBlur
    return kernel / kernel.sum()  # (k, k) float64, sum 1


def motion_kernel(size: int = 15, angle_deg: float = 0.0, direction: float = 0.0) -> np.ndarray:
    """imgaug's MotionBlur kernel: a vertical line through the centre whose weights go linearly from
    (1 + direction) / 2 at the top to (1 - direction) / 2 at the bottom (direction 0: uniform),
    turned clockwise by angle_deg about the centre (bilinear, zero outside), normalised to sum 1."""
    k = size if size % 2 == 1 else size + 1  # imgaug makes the size odd
    d = (np.clip(direction, -1.0, 1.0) + 1.0) / 2.0
    line = np.zeros((k, k))
    line[:, k // 2] = np.linspace(d, 1.0 - d, k)  # (k, k) float64 in [0, 1], one column set
    c = (k - 1) / 2.0
    dy, dx = np.mgrid[0:k, 0:k] - c  # (k, k) offsets of each output pixel from the centre
    cos, sin = np.cos(np.deg2rad(angle_deg)), np.sin(np.deg2rad(angle_deg))
    # Inverse map: the output pixel (dx, dy) reads the line at the point rotated back by the angle.
    kernel = _sample_bilinear(line, -sin * dx + cos * dy + c, cos * dx + sin * dy + c)
    return kernel / kernel.sum()  # (k, k) float64, sum 1


def _sample_bilinear(a: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear samples of `a` at float positions (y, x), zero outside the array."""
    y0, x0 = np.floor(y).astype(int), np.floor(x).astype(int)
    out = np.zeros(y.shape)
    for oy, wy in ((0, 1.0 - (y - y0)), (1, y - y0)):
        for ox, wx in ((0, 1.0 - (x - x0)), (1, x - x0)):
            yi, xi = y0 + oy, x0 + ox
            inside = (yi >= 0) & (yi < a.shape[0]) & (xi >= 0) & (xi < a.shape[1])
            values = a[np.clip(yi, 0, a.shape[0] - 1), np.clip(xi, 0, a.shape[1] - 1)]
            out += wy * wx * np.where(inside, values, 0.0)
    return out


def convolve2d(image_f: np.ndarray, kernel: np.ndarray, border: str = "reflect") -> np.ndarray:
    """True 2-D convolution (kernel flipped), same size out, as a sum of shifted slices.

    border: 'edge' replicates the last pixel; 'reflect' mirrors without repeating it (OpenCV's
    BORDER_REFLECT_101, scipy's 'mirror'); 'symmetric' mirrors repeating it (d c b a | a b c d,
    scipy's 'reflect'). A delta image gives back the kernel itself."""
    assert border in BORDERS, f"border must be one of {BORDERS}, got {border!r}"
    kh, kw = kernel.shape
    assert kh % 2 == 1 and kw % 2 == 1, f"kernel sides must be odd, got {kernel.shape}"
    H, W = image_f.shape
    padded = np.pad(np.asarray(image_f, np.float64), ((kh // 2,) * 2, (kw // 2,) * 2), mode=border)
    flipped = kernel[::-1, ::-1]
    out = np.zeros((H, W))  # (H, W) float64
    for i, j in zip(*np.nonzero(flipped)):  # zero taps cost nothing (disk and line kernels)
        out += flipped[i, j] * padded[i:i + H, j:j + W]
    return out


def convolve_separable(image_f: np.ndarray, k_row: np.ndarray, k_col: np.ndarray,
                       border: str = "edge") -> np.ndarray:
    """convolve2d with the kernel outer(k_col, k_row): k_row runs along each row (W), k_col along
    each column (H). Two 1-D passes instead of len(k_row) * len(k_col) shifted slices."""
    out = _convolve_axis(np.asarray(image_f, np.float64), np.asarray(k_col, np.float64), 0, border)
    return _convolve_axis(out, np.asarray(k_row, np.float64), 1, border)


def _convolve_axis(a: np.ndarray, k: np.ndarray, axis: int, border: str) -> np.ndarray:
    assert border in BORDERS and len(k) % 2 == 1, f"bad border {border!r} or even kernel {len(k)}"
    r, n = len(k) // 2, a.shape[axis]
    padded = np.pad(a, [(r, r) if ax == axis else (0, 0) for ax in range(2)], mode=border)
    out = np.zeros_like(a)
    for i, w in enumerate(k[::-1]):
        out += w * (padded[i:i + n] if axis == 0 else padded[:, i:i + n])
    return out


def resize_bilinear(image_f: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Bilinear resize with pixel centres aligned, in = (out + 0.5) * n_in / n_out - 0.5, and mirror
    borders: scipy.ndimage.zoom(order=1, grid_mode=True, mode='mirror') inside skimage's resize."""
    out = np.asarray(image_f, np.float64)
    for axis, n_out in enumerate(shape):
        n_in = out.shape[axis]
        pos = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5  # (n_out,) source coordinates
        i0 = np.floor(pos).astype(int)
        w = (pos - i0).reshape((-1, 1) if axis == 0 else (1, -1))  # weight of the right neighbour
        a0 = np.take(out, _mirror(i0, n_in), axis=axis)
        a1 = np.take(out, _mirror(i0 + 1, n_in), axis=axis)
        out = (1.0 - w) * a0 + w * a1
    return out


def _mirror(i: np.ndarray, n: int) -> np.ndarray:
    """Fold indices into [0, n) as ... 2 1 | 0 1 ... n-1 | n-2 ... (the edge is not repeated)."""
    if n == 1:
        return np.zeros_like(i)
    i = np.abs(i) % (2 * n - 2)
    return np.where(i >= n, 2 * n - 2 - i, i)


# ----- the eight degradations of §3.3 (Fig. 3.2, Table 5.5) -----

def cutout(image: np.ndarray, rng: np.random.Generator, n_min: int = 1, n_max: int = 5,
           size: float = 0.2, fill: int = 0) -> np.ndarray:
    """Fill 1-5 boxes of size * H by size * W pixels with `fill`; as imgaug's Cutout, each centre is
    uniform over the image and a box is cut off where it leaves the image."""
    _check(image)
    H, W = image.shape
    h, w = max(1, round(size * H)), max(1, round(size * W))
    out = image.copy()  # (H, W) uint8
    for _ in range(rng.integers(n_min, n_max + 1)):
        cy, cx = rng.random(2)  # box centre in [0, 1) of H and W
        top, left = int(np.floor(cy * H - h / 2)), int(np.floor(cx * W - w / 2))
        out[max(top, 0):top + h, max(left, 0):left + w] = fill
    return out


def gaussian_noise(image: np.ndarray, rng: np.random.Generator, sigma: float = 0.15 * 255) -> np.ndarray:
    """Add N(0, sigma) noise drawn once per pixel (§3.3: sigma = 0.15 * 255)."""
    _check(image)
    return _to_uint8(image + rng.normal(0.0, sigma, image.shape))  # (H, W) uint8


def salt_pepper(image: np.ndarray, rng: np.random.Generator, p: float = 0.2, mask_min: int = 4,
                mask_max: int = 16, binary: bool = True) -> np.ndarray:
    """Coarse salt and pepper: mark each cell of a low-resolution mask (sides drawn apart in
    [mask_min, mask_max]) with probability p, upsample it to (H, W) by nearest neighbour, and write
    0 or 255 at random into the marked pixels (binary=False: Beta(0.5, 0.5) * 255, as imgaug)."""
    _check(image)
    H, W = image.shape
    h_low, w_low = rng.integers(mask_min, mask_max + 1, size=2)
    low = rng.random((h_low, w_low)) < p  # (h_low, w_low) bool
    mask = low[np.arange(H) * h_low // H][:, np.arange(W) * w_low // W]  # (H, W) bool, blocks
    n = int(mask.sum())
    values = np.where(rng.random(n) < 0.5, 0, 255) if binary else rng.beta(0.5, 0.5, n) * 255
    out = image.copy()  # (H, W) uint8
    out[mask] = np.rint(values)
    return out


def low_resolution(image: np.ndarray, rng: np.random.Generator, factor: int = 4,
                   noise_var: float = 0.01) -> np.ndarray:
    """The thesis code's low-resolution emulation (§3.3, after [26]): Gaussian noise of variance
    noise_var on [0, 1] data, clip, rescale so the maximum is the original maximum, then scale
    down by `factor` (Gaussian pre-blur sigma = (factor - 1) / 2, mirror border, as skimage's
    anti-aliasing) and back up to (H, W), bilinear both ways."""
    _check(image)
    H, W = image.shape
    noise = rng.normal(0.0, np.sqrt(noise_var), image.shape)  # (H, W) float64, N(0, 0.1) by default
    x = np.clip(image / 255.0 + noise, 0.0, 1.0)  # (H, W) float64 in [0, 1]
    if x.max() > 0:
        x = x / x.max() * float(image.max())  # (H, W) float64 in [0, max(image)], grey levels again
    small = (max(1, round(H / factor)), max(1, round(W / factor)))
    sigma_h, sigma_w = (H / small[0] - 1.0) / 2.0, (W / small[1] - 1.0) / 2.0
    x = convolve_separable(x, gaussian_kernel1d(sigma_w), gaussian_kernel1d(sigma_h), "reflect")
    return _to_uint8(resize_bilinear(resize_bilinear(x, small), (H, W)))  # (H, W) uint8


def _check_rng(rng, name: str, example: str) -> None:
    """The blurs take (image, rng) like every degradation but never draw: catch gaussian_blur(x, 1.0)."""
    if rng is not None and not isinstance(rng, np.random.Generator):
        raise TypeError(f"{name}: rng must be None or a np.random.Generator, got {type(rng).__name__} "
                        f"{rng!r}; pass the blur's parameters by keyword, e.g. {name}(image, {example})")


def gaussian_blur(image: np.ndarray, rng: np.random.Generator = None, sigma: float = 3.0) -> np.ndarray:
    """Gaussian filter, sigma 3 (§3.3), edge-replicate border, kernel cut at 4 sigma; rng unused."""
    _check(image)
    _check_rng(rng, "gaussian_blur", "sigma=1.0")
    kernel = gaussian_kernel1d(sigma)
    return _to_uint8(convolve_separable(image, kernel, kernel, "edge"))  # (H, W) uint8


def defocus_blur(image: np.ndarray, rng: np.random.Generator = None, radius: float = 4,
                 alias_blur: float = 0.5) -> np.ndarray:
    """imgcorruptlike DefocusBlur, severity 2 = disk radius 4, alias blur 0.5 (§3.3); rng unused."""
    _check(image)
    _check_rng(rng, "defocus_blur", "radius=3")
    return _to_uint8(convolve2d(image, disk_kernel(radius, alias_blur), "reflect"))  # (H, W) uint8


def motion_blur(image: np.ndarray, rng: np.random.Generator, size: int = 15, angle: float = None,
                direction: float = None) -> np.ndarray:
    """Motion blur with a 15 x 15 line kernel (§3.3); angle uniform in [0, 360) and direction
    uniform in [-1, 1] per image unless given (imgaug's MotionBlur defaults)."""
    _check(image)
    angle = rng.uniform(0.0, 360.0) if angle is None else angle
    direction = rng.uniform(-1.0, 1.0) if direction is None else direction
    return _to_uint8(convolve2d(image, motion_kernel(size, angle, direction), "reflect"))


def pixel_dropout(image: np.ndarray, rng: np.random.Generator, p_max: float = 0.2) -> np.ndarray:
    """Set each pixel to 0 with probability p, p uniform in [0, p_max] per image (§3.3: 0-20%)."""
    _check(image)
    p = rng.uniform(0.0, p_max)
    return np.where(rng.random(image.shape) < p, 0, image).astype(np.uint8)  # (H, W) uint8


# Table 5.5's rows, in the thesis's order of §3.3.
DEGRADATIONS = {
    "cutout": cutout,
    "gaussian_noise": gaussian_noise,
    "salt_pepper": salt_pepper,
    "low_resolution": low_resolution,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "motion_blur": motion_blur,
    "pixel_dropout": pixel_dropout,
}


def random_degradation(names: Union[str, Iterable[str]]) -> Callable:
    """A callable (image, rng) -> uint8 that applies one of `names`, drawn uniformly per image."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in DEGRADATIONS]
    if unknown or not names:
        raise ValueError(f"unknown degradation(s) {unknown or names}; valid: {', '.join(DEGRADATIONS)}")

    def degrade(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return DEGRADATIONS[names[rng.integers(len(names))]](image, rng)

    return degrade


# ----- domain adaptation (Appendix A) -----

def _zero_peak_fix(count1: float, count2: float) -> float:
    """App. A: predict the count of 0 from the line through bins 1 and 2, never below 0."""
    return max(0.0, 2.0 * count1 - count2)


def mean_histogram(images: Iterable[np.ndarray], fix_zero_peak: bool = True) -> np.ndarray:
    """Mean of the images' normalised 256-bin histograms (the target of histogram matching); with
    fix_zero_peak, bin 0 (zero padding) is replaced by the regression value, then renormalised."""
    hists = [np.bincount(im.ravel(), minlength=256) / im.size for im in images]  # each (256,) sums to 1
    hist = np.mean(hists, axis=0)  # (256,) float64
    if fix_zero_peak:
        hist[0] = _zero_peak_fix(hist[1], hist[2]) if hist[1:].any() else 1.0
    return hist / hist.sum()  # (256,) float64, sums to 1


def match_histogram(image: np.ndarray, target_hist: np.ndarray,
                    fix_zero_peak: bool = False) -> np.ndarray:
    """Map grey levels so the image's CDF follows the target's: each level's quantile is looked up
    in the target CDF by linear interpolation (skimage's match_histograms for uint8; target bins
    that are empty are left out, so the CDF is strictly increasing). With fix_zero_peak the source
    count of 0 is the regression value when 0, 1 and 2 all occur (else 0, or 1 for an all-black
    image) and 0 pixels stay 0 (App. A: padding stays padding)."""
    _check(image)
    counts = np.bincount(image.ravel(), minlength=256).astype(np.float64)  # (256,) pixel counts
    keep_zero = fix_zero_peak and counts[0] > 0
    if keep_zero:
        if counts[1] > 0 and counts[2] > 0:
            counts[0] = _zero_peak_fix(counts[1], counts[2])
        else:
            counts[0] = 0.0 if counts[1:].any() else 1.0
    source_cdf = np.cumsum(counts) / counts.sum()  # (256,) float64 in [0, 1]
    target = np.asarray(target_hist, dtype=np.float64)
    levels = np.nonzero(target)[0]  # grey levels present in the target
    target_cdf = np.cumsum(target[levels]) / target.sum()  # strictly increasing, ends at 1
    lut = np.interp(source_cdf, target_cdf, levels)  # (256,) float64 grey levels
    if keep_zero:
        lut[0] = 0.0
    return _to_uint8(lut)[image]  # (H, W) uint8


def clahe(image: np.ndarray, clip_limit: float = 2.0, tile_grid: Sequence[int] = (8, 8)) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation [68] with OpenCV's arithmetic.

    tile_grid = (rows, cols) of tiles. A side that does not divide is padded at the bottom/right
    by mirroring (BORDER_REFLECT_101); like OpenCV, both sides then get n - side % n more pixels,
    i.e. one more row (column) per tile even on a side that did divide. Per tile: histogram, clipped at
    max(1, int(clip_limit * tile_area / 256)), the excess spread evenly and its remainder on every
    (256 // remainder)-th bin from 0, LUT = rint(CDF * 255 / tile_area) in float32. Each pixel
    blends the LUTs of its four nearest tiles, at position x / tile_width - 0.5 in tile units."""
    _check(image)
    n_ty, n_tx = tile_grid
    H, W = image.shape
    padded = image
    if H % n_ty or W % n_tx:
        padded = np.pad(image, ((0, n_ty - H % n_ty), (0, n_tx - W % n_tx)), mode="reflect")
    th, tw = padded.shape[0] // n_ty, padded.shape[1] // n_tx
    area, n_tiles = th * tw, n_ty * n_tx
    tiles = padded.reshape(n_ty, th, n_tx, tw).transpose(0, 2, 1, 3)  # (ty, tx, th, tw) uint8
    tiles = tiles.reshape(n_tiles, area)  # (T, th*tw) uint8, tiles row by row
    offsets = 256 * np.arange(n_tiles)[:, None]  # one 256-bin block per tile
    hist = np.bincount((tiles + offsets).ravel(), minlength=256 * n_tiles)
    hist = hist.reshape(n_tiles, 256)  # (T, 256) int64 counts per tile
    if clip_limit > 0:
        limit = max(int(clip_limit * area / 256), 1)
        excess = np.maximum(hist - limit, 0).sum(axis=1, keepdims=True)  # (T, 1) clipped pixels
        hist = np.minimum(hist, limit) + excess // 256
        residual = excess % 256
        step = np.maximum(256 // np.maximum(residual, 1), 1)
        bins = np.arange(256)
        hist = hist + ((bins % step == 0) & (bins // step < residual))  # (T, 256) int64
    lut_scale = np.float32(255) / np.float32(area)
    luts = np.rint(np.cumsum(hist, axis=1).astype(np.float32) * lut_scale)  # (T, 256) float32
    luts = np.clip(luts, 0, 255).reshape(n_ty, n_tx, 256)

    def neighbours(n_pixels: int, tile: int, n: int):
        inv = np.float32(1) / np.float32(tile)  # OpenCV works in float32 here
        pos = np.arange(n_pixels).astype(np.float32) * inv - np.float32(0.5)  # (n,) in tile units
        first = np.floor(pos).astype(int)
        weight = pos - first.astype(np.float32)  # (n,) float32 in [0, 1), weight of the second
        return np.maximum(first, 0), np.minimum(first + 1, n - 1), weight

    y1, y2, ya = neighbours(H, th, n_ty)
    x1, x2, xa = neighbours(W, tw, n_tx)
    y1, y2, ya = y1[:, None], y2[:, None], ya[:, None]
    top = luts[y1, x1, image] * (1 - xa) + luts[y1, x2, image] * xa  # (H, W) float32
    bottom = luts[y2, x1, image] * (1 - xa) + luts[y2, x2, image] * xa  # (H, W) float32
    return _to_uint8(top * (1 - ya) + bottom * ya)  # (H, W) uint8


# Preprocessing baselines of Table A.1 (train.py --preprocess): applied to every image the model sees.
PREPROCESSING = ("none", "clahe", "hist_match")


def preprocess(images: Iterable[np.ndarray], kind: str, target_hist: np.ndarray = None):
    """App. A baselines on a stack of (H, W) uint8 images -> (n, H, W) uint8, or a list of (H, W) uint8
    when their sizes differ.

    "clahe": CLAHE [68] with OpenCV's defaults (clip 2, 8x8 tiles); "hist_match": every image matched
    to `target_hist`, the mean zero-peak-corrected histogram of the target domain's images
    (`mean_histogram`), zero padding kept as padding; "none": unchanged.
    """
    if kind not in PREPROCESSING:
        raise ValueError(f"preprocessing must be one of {', '.join(PREPROCESSING)}, got {kind!r}")
    if kind == "hist_match" and target_hist is None:
        raise ValueError("hist_match needs the target domain's mean histogram (target_hist)")
    if kind == "clahe":
        images = [clahe(im) for im in images]
    elif kind == "hist_match":
        images = [match_histogram(im, target_hist, fix_zero_peak=True) for im in images]
    images = list(images)
    return np.stack(images) if len({im.shape for im in images}) <= 1 and images else images


if __name__ == "__main__":
    import time

    rng = np.random.default_rng(0)
    tile = rng.integers(0, 256, (256, 256)).astype(np.uint8)
    for name, fn in DEGRADATIONS.items():
        fn(tile, rng)
        start = time.perf_counter()
        for _ in range(20):
            fn(tile, rng)
        print(f"{name:15s} {1000 * (time.perf_counter() - start) / 20:7.2f} ms per 256x256 tile")
