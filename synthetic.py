"""The built-in synthetic EM data set, so that everything runs on a fresh machine with no download.

Not in the thesis, whose data are Lucchi++ and Kasthuri++ (§4.1). A slice is grainy grey cytoplasm,
neuropil walls (dark membranes of warped Voronoi cells), vesicles and dark blobs as decoys, and the
labelled class: mitochondria, elongated capsules with a double membrane and cristae stripes, about
5-15% of the pixels. It is built so that intensity alone does not solve it: the best global threshold
of the raw image scores IoU_F < 0.5 (`best_threshold_iou`, Eq. 4.2). Two "microscopes" (DOMAINS "a"
and "b") differ in contrast, noise, texture scale and object size, as Lucchi++ (FIB-SEM) and
Kasthuri++ (ssEM) do, for the domain-adaptation experiments of App. A. Every slice is a pure function
of (seed, domain, index, size), drawn from its own np.random.Generator.
Shapes: n slices, H x W a slice; NumPy comments give dtype and range; lengths are in pixels.
"""
import os
from dataclasses import dataclass

import numpy as np
from PIL import Image

from degrade import convolve_separable, gaussian_kernel1d

# train.py's synthetic training set; its test set is TRAIN_SEED + 1, whatever the run's seed
TRAIN_SEED = 2022

@dataclass(frozen=True)
class EMStyle:
    """The look of one synthetic microscope; grey levels in [0, 1], lengths in pixels."""
    cytoplasm: float  # mean grey of the cytoplasm
    contrast: float   # gain on everything that departs from it (structures and texture)
    noise: float      # std of the independent per-pixel noise
    grain: float      # correlation length of the finest cytoplasm texture
    scale: float      # size of cells, organelles and coarse texture relative to domain "a"


# Two "microscopes" differing as Lucchi++ (FIB-SEM) and Kasthuri++ (ssEM) do (§4.1, App. A)
DOMAINS = {"a": EMStyle(cytoplasm=0.60, contrast=1.00, noise=0.035, grain=1.0, scale=1.0),
           "b": EMStyle(cytoplasm=0.70, contrast=0.75, noise=0.060, grain=0.6, scale=0.7)}
# Probe points (along, across) in units of a candidate's half-extent: a cheap first overlap test
_PROBE_ALONG, _PROBE_ACROSS = (g.ravel() for g in np.meshgrid(np.linspace(-1, 1, 7), (-1, 0, 1)))


def _smooth_noise(rng, shape, sigma):
    """Periodic Gaussian random field of correlation length sigma -> (H, W) float32, std 1."""
    fy = np.fft.fftfreq(shape[0])[:, None]
    fx = np.fft.rfftfreq(shape[1])[None, :]
    # white noise filtered by a Gaussian, drawn directly in Fourier space where it is not ~0
    transfer = np.exp(-2 * (np.pi * sigma) ** 2 * (fy ** 2 + fx ** 2))  # (H, W//2+1) float64
    keep = transfer > 1e-4
    n = int(keep.sum())
    spectrum = np.zeros(transfer.shape, np.complex64)
    spectrum[keep] = (rng.standard_normal(n) + 1j * rng.standard_normal(n)) * transfer[keep]
    field = np.fft.irfft2(spectrum, s=shape)                   # (H, W) float
    return (field / field.std()).astype(np.float32)


def _gaussian_blur(image, sigma):
    """degrade.py's separable Gaussian (cut at 4 sigma), mirrored border -> (H, W) float32."""
    taps = gaussian_kernel1d(sigma)                            # (2r+1,) float64, sums to 1
    return convolve_separable(image, taps, taps, "symmetric").astype(np.float32)  # (H, W)


def _box(cy, cx, extent, shape):
    """Window around (cy, cx) clipped to the image -> (rows, cols, y, x) with y (h, 1), x (1, w)."""
    y0, x0 = (min(max(int(c - extent), 0), n) for c, n in ((cy, shape[0]), (cx, shape[1])))
    y1 = min(max(int(cy + extent) + 2, y0), shape[0])
    x1 = min(max(int(cx + extent) + 2, x0), shape[1])
    y = np.arange(y0, y1, dtype=np.float32)[:, None] - cy
    x = np.arange(x0, x1, dtype=np.float32)[None, :] - cx
    return slice(y0, y1), slice(x0, x1), y, x


def _cell_walls(rng, shape, s):
    """Neuropil: walls of additively weighted Voronoi cells in smoothly warped coordinates.

    Returns membrane strength (H, W) float32 in [0, 1.3], cell index (H, W) and the warp (2, H, W).
    """
    warp = np.stack([7 * s * _smooth_noise(rng, shape, 14 * s) for _ in range(2)])  # (2, H, W)
    wy = np.arange(0, shape[0], 2, dtype=np.float32)[:, None] + warp[0, ::2, ::2]  # half res
    wx = np.arange(0, shape[1], 2, dtype=np.float32)[None, :] + warp[1, ::2, ::2]
    n_cells = max(2, round(shape[0] * shape[1] / (70 * s) ** 2))
    seeds = rng.uniform((0, 0), shape, size=(n_cells, 2)).astype(np.float32)
    reach = rng.uniform(0, 35 * s, size=n_cells).astype(np.float32)  # unequal cell sizes
    nearest = np.full(wy.shape, np.inf, np.float32)
    owner = np.zeros(wy.shape, np.int32)
    for k, (py, px) in enumerate(seeds):
        d = np.sqrt((wy - py) ** 2 + (wx - px) ** 2) - reach[k]
        np.copyto(owner, k, where=d < nearest)
        np.minimum(nearest, d, out=nearest)
    owner = owner.repeat(2, 0).repeat(2, 1)[:shape[0], :shape[1]]  # (H, W) int32
    line = np.zeros(shape, np.float32)                         # 1 on the pixels where cells meet
    line[:-1] = owner[:-1] != owner[1:]
    line[:, :-1] = np.maximum(line[:, :-1], owner[:, :-1] != owner[:, 1:])
    sigma = 1.6 * s                                            # a blurred line: peak ~1
    walls = np.minimum(_gaussian_blur(line, sigma) * (np.sqrt(2 * np.pi) * sigma), 1.3)
    return walls, owner, n_cells, warp


def _mitochondrion(sd, along, across, rng, s):
    """Darkness of one mitochondrion from its signed distance: matrix, double membrane, cristae."""
    matrix = rng.uniform(0.12, 0.18) / (1 + np.exp(sd / (0.6 * s)))
    membranes = 0.24 * np.exp(-((sd + 1.0 * s) / (0.8 * s)) ** 2) \
        + 0.18 * np.exp(-((sd + 3.4 * s) / (0.8 * s)) ** 2)
    inside_inner = np.clip((-sd - 4.2 * s) / (1.5 * s), 0, 1)
    # cristae: wavy lamellae across the short axis, i.e. a stripe pattern along the long axis
    wave = along + 1.3 * s * np.sin(across / (2.5 * s) + rng.uniform(0, 2 * np.pi))
    phase = 2 * np.pi * wave / (rng.uniform(6.5, 9.5) * s) + rng.uniform(0, 2 * np.pi)
    cristae = rng.uniform(0.18, 0.26) * inside_inner * (np.clip(np.cos(phase), 0, 1) ** 2 - 0.3)
    return matrix + membranes + cristae


def _place_mitochondria(rng, walls, warp, s, darkness, taken):
    """Capsules inside cells, none touching another -> mask (H, W) bool; paints darkness."""
    shape = walls.shape
    mask = np.zeros(shape, bool)
    target, area = rng.uniform(0.07, 0.12) * mask.size, 0     # ~10% foreground
    for _ in range(int(2000 * mask.size / 512 ** 2) + 100):   # tries, most fail the probe
        if area >= target:
            break
        radius, half = rng.uniform(9, 17) * s, rng.uniform(4, 32) * s
        theta, cy, cx = rng.uniform(0, np.pi), rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        cos, sin = np.cos(theta), np.sin(theta)
        pa, pc = _PROBE_ALONG * (half + radius), _PROBE_ACROSS * radius
        py = np.clip(cy + pa * sin + pc * cos, 0, shape[0] - 1).astype(int)
        px = np.clip(cx + pa * cos - pc * sin, 0, shape[1] - 1).astype(int)
        if taken[py, px].any() or (walls[py, px] > 0.2).any():
            continue
        rows, cols, y, x = _box(cy, cx, half + radius + 8 * s, shape)
        y, x = y + 0.4 * warp[0, rows, cols], x + 0.4 * warp[1, rows, cols]  # gently bent
        along, across = x * cos + y * sin, -x * sin + y * cos
        sd = np.sqrt(np.maximum(np.abs(along) - half, 0) ** 2 + across ** 2) - radius
        inside = sd < 0                                        # signed distance to the capsule
        if not inside.any() or taken[rows, cols][sd < 2 * s].any() \
                or (walls[rows, cols][sd < 3 * s] > 0.2).any():
            continue
        mask[rows, cols] |= inside
        taken[rows, cols] |= sd < 6 * s
        darkness[rows, cols] += _mitochondrion(sd, along, across, rng, s)
        area += int(inside.sum())
    return mask


def _place_decoys(rng, s, darkness, taken):
    """Dark things that are not mitochondria: vesicles (rings, often clustered) and blobs."""
    shape, area_ratio = darkness.shape, darkness.size / 512 ** 2
    centres = [rng.uniform((0, 0), shape, size=(rng.poisson(25 * area_ratio), 2))]
    for _ in range(rng.poisson(4 * area_ratio)):
        n = rng.integers(6, 20)
        centres.append(rng.uniform((0, 0), shape) + rng.normal(0, 14 * s, size=(n, 2)))
    for cy, cx in np.concatenate(centres):
        r = rng.uniform(3.0, 5.5) * s
        rows, cols, y, x = _box(cy, cx, r + 4 * s, shape)
        d = np.sqrt(y ** 2 + x ** 2)
        if not taken[rows, cols][d < r + 1].any():
            darkness[rows, cols] += 0.35 * np.exp(-((d - r) / (0.8 * s)) ** 2) - 0.06 * (d < r)
    target, area = rng.uniform(0.03, 0.05) * darkness.size, 0  # blobs as dark as mitochondria
    for _ in range(int(400 * area_ratio) + 50):
        if area >= target:
            break
        r, cy, cx = rng.uniform(6, 15) * s, rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        rows, cols, y, x = _box(cy, cx, 1.3 * r + 3, shape)
        phi = np.arctan2(y, x)
        lobes = 0.15 * np.sin(2 * phi + rng.uniform(0, 2 * np.pi)) \
            + 0.08 * np.sin(3 * phi + rng.uniform(0, 2 * np.pi))
        sd = np.sqrt(y ** 2 + x ** 2) - r * (1 + lobes)
        if taken[rows, cols][sd < 2].any():
            continue
        darkness[rows, cols] += rng.uniform(0.25, 0.40) / (1 + np.exp(sd / (0.8 * s)))
        taken[rows, cols] |= sd < 0
        area += int((sd < 0).sum())


def _synthetic_slice(rng, height, width, style):
    """One EM-like slice -> ((H, W) uint8, (H, W) uint8 in {0, 1})."""
    shape, s = (height, width), style.scale
    walls, owner, n_cells, warp = _cell_walls(rng, shape, s)
    darkness = np.zeros(shape, np.float32)                     # how much darker than cytoplasm
    taken = np.zeros(shape, bool)                              # kept free of other objects
    mask = _place_mitochondria(rng, walls, warp, s, darkness, taken)
    _place_decoys(rng, s, darkness, taken)
    membranes = 0.45 * walls * np.clip(0.8 + 0.25 * _smooth_noise(rng, shape, 8 * s), 0.3, 1.2)
    texture = (0.045 * _smooth_noise(rng, shape, style.grain)  # grain at three scales
               + 0.03 * _smooth_noise(rng, shape, 3.5 * s)
               + 0.04 * _smooth_noise(rng, shape, 20 * s))
    cell_grey = rng.normal(0.0, 0.035, n_cells).astype(np.float32)[owner]
    grey = texture + cell_grey - _gaussian_blur(darkness + membranes, 0.8)  # blur: the beam spot
    grey = style.cytoplasm + style.contrast * grey + style.noise * rng.standard_normal(
        shape, dtype=np.float32)                               # (H, W) float32 ~[0, 1]
    return np.clip(np.round(grey * 255), 0, 255).astype(np.uint8), mask.astype(np.uint8)


def synthetic_em(n_images, height=512, width=512, seed=0, domain="a"):
    """The built-in EM-like data set -> ((n, H, W) uint8, (n, H, W) uint8 in {0, 1}).

    Slice i depends only on (seed, domain, i, H, W), so a longer set starts with the shorter one;
    use different seeds for training and test sets. Sizes are in pixels and meant for sides of
    128 or more: a 64-pixel slice holds one or two mitochondria, hence 15-35% foreground.
    """
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    images = np.empty((n_images, height, width), np.uint8)
    masks = np.empty((n_images, height, width), np.uint8)
    for i in range(n_images):
        rng = np.random.default_rng([seed, sorted(DOMAINS).index(domain), i])
        images[i], masks[i] = _synthetic_slice(rng, height, width, DOMAINS[domain])
    return images, masks


def splits(n_train, n_test, side):
    """The built-in set as a run trains on it: {"train": (x, y), "test": (x, y)} of side x side slices,
    the same for every run seed (TRAIN_SEED, and the next seed for the test slices)."""
    return {"train": synthetic_em(n_train, side, side, seed=TRAIN_SEED),
            "test": synthetic_em(n_test, side, side, seed=TRAIN_SEED + 1)}


def best_threshold_iou(images, masks):
    """Best IoU_F (Eq. 4.2) of one global threshold over the stack, either polarity, all 256.

    Dark polarity predicts foreground where value <= t, bright where value >= t.
    """
    fg = masks.astype(bool)
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)     # (256,)
    counts_fg = np.bincount(images[fg], minlength=256).astype(np.float64)      # (256,)
    best = 0.0
    for c_all, c_fg in ((counts, counts_fg), (counts[::-1], counts_fg[::-1])):
        tp, predicted = np.cumsum(c_fg), np.cumsum(c_all)
        union = predicted + counts_fg.sum() - tp
        best = max(best, float(np.max(tp / np.maximum(union, 1))))
    return best


def write_dataset(root, n_train, n_test, side, seed, domain="a", test_seed=None):
    """A data-set folder root/{train,test}/{x,y} of synthetic slices (PNG, masks 0/255), written once:
    a split whose masks folder exists is kept. The test set uses test_seed (default seed + 100)."""
    for split, n, s in (("train", n_train, seed),
                        ("test", n_test, seed + 100 if test_seed is None else test_seed)):
        folder = os.path.join(root, split)
        if os.path.isdir(os.path.join(folder, "y")):
            continue
        x, y = synthetic_em(n, side, side, seed=s, domain=domain)
        os.makedirs(os.path.join(folder, "x"), exist_ok=True)
        for i in range(n):
            Image.fromarray(x[i]).save(os.path.join(folder, "x", f"{i:03d}.png"))
        tmp = os.path.join(folder, "y.tmp")  # the masks folder appears whole, or not at all
        os.makedirs(tmp, exist_ok=True)
        for i in range(n):
            Image.fromarray(y[i] * 255).save(os.path.join(tmp, f"{i:03d}.png"))
        os.replace(tmp, os.path.join(folder, "y"))
    return root


if __name__ == "__main__":  # python synthetic.py DIR: the demo's data set (48 + 8 slices) as a folder
    import sys

    import cli

    def write_demo_set(argv):
        if len(argv) != 1 or argv[0].startswith("-"):
            raise cli.UsageError("usage: python synthetic.py DIR  (a new folder for the demo's synthetic "
                                 "data set)")
        cli.refuse_nonempty(argv[0], flag="DIR")
        write_dataset(argv[0], 48, 8, 256, TRAIN_SEED, test_seed=TRAIN_SEED + 1)
        print(f"wrote the demo's 48 training and 8 test slices (256x256) to {argv[0]}")

    cli.main(write_demo_set, sys.argv[1:])
