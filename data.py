"""Data: loading EM stacks, 256x256 training tiles, augmentation and a built-in synthetic EM set.

Thesis: §4.1 (Lucchi++ and Kasthuri++ as stacks of 2D slices), §4.3.1 (mirror padding to a
multiple of 256, sequential non-overlapping 256x256 patches, intensities in [0, 1]), §4.3.2
(10% of the training patches at random for validation; on-the-fly rotations and flips, the
augmentation of [34]). SPEC §1 fixes the details the text leaves open; SPEC §7 asks for the
synthetic set, so that everything runs with no download.

Choices where the thesis code is silent or its libraries disagree:
- 16-bit slices are divided by 257 (65535 -> 255): one fixed map for every slice, so relative
  intensities survive across the stack (a per-image min/max stretch would not keep them).
- Rotation fill is "reflect" as Keras's ImageDataGenerator means it (`rotation_range=180` in
  App. B is its argument): d c b a | a b c d | d c b a, the edge pixel repeated, i.e. NumPy's
  'symmetric'. imgaug's and scikit-image's "reflect" skip the edge pixel (NumPy 'reflect').
- Positive angles turn the image counter-clockwise on screen: rotate(x, 90) == np.rot90(x).
Shapes: n slices or tiles, H x W a slice, T the tile side; NumPy comments give dtype and range.
"""
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from degrade import convolve_separable, gaussian_kernel1d

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff")


class DataError(Exception):
    """Bad input data; the message names the file or folder, what is wrong and how to fix it."""


# ---------------------------------------------------------------- loading (§4.1, SPEC §1)

def _image_files(folder):
    """Image files of `folder`, sorted by name (hidden files such as '._x.tif' are skipped)."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: folder not found; a data set needs train/x, train/y, test/x "
                        "and test/y (images in x, masks in y)")
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith("."))
    if not names:
        raise DataError(f"{folder}: no image files (.png, .tif, .tiff) in this folder; put one "
                        "file per slice or one multi-page TIFF stack there")
    return [os.path.join(folder, n) for n in names]


def _page_to_array(page, is_mask, name):
    """One Pillow page of file `name` -> ((H, W) uint8, note on the conversion or None)."""
    mode = page.mode
    if is_mask:
        raw = np.asarray(page)                                  # (H, W) or (H, W, C), any dtype
        if raw.ndim == 3:
            raw = raw[..., :3] if raw.shape[-1] >= 3 else raw[..., :1]  # alpha is no label
            raw = raw.any(axis=-1)
        note = None if mode in ("1", "L") else f"{mode} masks: any non-zero value is foreground"
        return (raw != 0).astype(np.uint8), note                # (H, W) uint8 in {0, 1}
    if mode == "L":
        return np.asarray(page, dtype=np.uint8), None           # (H, W) uint8 in [0, 255]
    if mode == "1":
        return np.asarray(page, dtype=np.uint8) * 255, "1-bit images scaled to 0/255"
    if mode == "F":
        raise DataError(f"{name}: floating-point image; save it as 8-bit (or 16-bit) "
                        "grey")
    if mode.startswith("I"):
        raw = np.asarray(page).astype(np.int64)                 # (H, W) int64
        if raw.min() < 0 or raw.max() > 65535:
            raise DataError(f"{name}: integer values outside 0..65535; save it as "
                            "8-bit or 16-bit grey")
        return ((raw + 128) // 257).astype(np.uint8), "16-bit images divided by 257 to 8-bit"
    # RGB, RGBA, P, LA, CMYK...: Pillow's ITU-R 601-2 luma, alpha dropped
    return np.asarray(page.convert("L"), dtype=np.uint8), f"{mode} images converted to grey " \
        "(luminance)"


def read_files(paths, is_mask=False):
    """Every page of every file -> list of (path, list of (H, W) uint8 pages), one entry per file.

    A multi-page TIFF stack gives one entry with a page per slice. Colour, 1-bit and 16-bit images
    are converted as SPEC §1 says, with one warning per kind of conversion.
    """
    files, notes = [], set()
    for path in paths:
        pages = []
        try:
            with Image.open(path) as im:
                n_pages = getattr(im, "n_frames", 1)
                for k in range(n_pages):
                    im.seek(k)
                    name = path if n_pages == 1 else f"{path} (page {k + 1})"
                    array, note = _page_to_array(im, is_mask, name)
                    pages.append(array)
                    notes.add(note)
        except (OSError, ValueError, SyntaxError, EOFError) as e:  # includes UnidentifiedImageError
            reason = " ".join(str(e).split())
            raise DataError(f"{path}: cannot read this file as an image ({reason}); replace or "
                            "remove the corrupt file") from e
        files.append((path, pages))
    where = os.path.dirname(paths[0]) if paths else ""
    for note in sorted(n for n in notes if n):
        warnings.warn(f"{where}: {note}", stacklevel=3)
    return files


def image_paths(path):
    """One image file, or the image files of a folder sorted by name -> list of paths."""
    if os.path.isfile(path):
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{path}: not a .png, .tif or .tiff file; pass an image, a multi-page "
                            "TIFF stack or a folder of them")
        return [path]
    return _image_files(path)


def _read_folder(folder, is_mask):
    """Every page of every file in `folder` -> (list of (H, W) uint8, list of their names)."""
    arrays, names = [], []
    for path, pages in read_files(_image_files(folder), is_mask):
        arrays += pages
        names += [path] if len(pages) == 1 else [f"{path} (page {k + 1})" for k in range(len(pages))]
    return arrays, names


def _hw(shape):
    return f"{shape[0]}x{shape[1]}"


def load_split(root, split, masks=True):
    """Load `root/split/x` (and `root/split/y`) -> ((n, H, W) uint8, (n, H, W) uint8 {0,1} or None).

    One file per slice (sorted by name, x and y paired by sort order) or multi-page TIFF stacks;
    every page counts as one slice. Masks: any non-zero pixel is a mitochondrion (SPEC §1).
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if not os.path.isdir(root):
        raise DataError(f"{root}: data folder not found; pass a folder holding train/x, train/y, "
                        "test/x and test/y")
    x_dir, y_dir = os.path.join(root, split, "x"), os.path.join(root, split, "y")
    images, image_names = _read_folder(x_dir, is_mask=False)
    labels, label_names = _read_folder(y_dir, is_mask=True) if masks else (None, None)
    if masks:
        if len(labels) != len(images):
            raise DataError(f"{x_dir} holds {len(images)} images but {y_dir} holds "
                            f"{len(labels)} masks; every image needs exactly one mask "
                            "(paired by sorted file name)")
        for image, label, image_name, label_name in zip(images, labels, image_names, label_names):
            if image.shape != label.shape:
                raise DataError(f"{label_name}: mask is {_hw(label.shape)} but its image "
                                f"{image_name} is {_hw(image.shape)} (HxW); a mask must match "
                                "its image pixel for pixel")
    usual = Counter(a.shape for a in images).most_common(1)[0][0]
    for image, image_name in zip(images, image_names):
        if image.shape != usual:
            raise DataError(f"{image_name}: slice is {_hw(image.shape)} but the other slices of "
                            f"{x_dir} are {_hw(usual)} (HxW); crop or pad the slices of a split "
                            "to one size")
    return np.stack(images), (np.stack(labels) if masks else None)


# ---------------------------------------------------------------- tiles (§4.3.1, §4.3.2)

def padding_for(size, multiple):
    """Padding (before, after) up to the next multiple of `multiple`; the odd pixel goes first."""
    total = -size % multiple
    return (total + 1) // 2, total // 2


def pad_to_multiple(image, multiple):
    """Mirror-pad the last two axes up to a multiple (§4.3.1): 'symmetric', edge pixel repeated."""
    pad = [(0, 0)] * (image.ndim - 2) + [padding_for(n, multiple) for n in image.shape[-2:]]
    return np.pad(image, pad, mode="symmetric")                # (..., H', W') same dtype


def extract_tiles(stack, tile):
    """(n, H, W) -> (n * tiles per slice, T, T): sequential tiles, row-major, slices in order."""
    padded = pad_to_multiple(stack, tile)                      # (n, H', W')
    n, height, width = padded.shape
    grid = padded.reshape(n, height // tile, tile, width // tile, tile)
    return grid.transpose(0, 1, 3, 2, 4).reshape(-1, tile, tile)  # (n * H'/T * W'/T, T, T)


def split_validation(n, fraction=0.1, seed=0):
    """Random, seeded split of range(n) -> (train_idx, val_idx), both sorted int64 (§4.3.2).

    The validation size is fraction * n rounded up (as scikit-learn's train_test_split), at least
    one item when n >= 2 and fraction > 0, and never all of them.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n_val = math.ceil(fraction * n - 1e-9) if fraction > 0 else 0
    n_val = min(max(n_val, 1 if (n >= 2 and fraction > 0) else 0), max(n - 1, 0))
    order = np.random.default_rng(seed).permutation(n)         # (n,) int64
    return np.sort(order[n_val:]), np.sort(order[:n_val])


# ---------------------------------------------------------------- augmentation (§4.3.2)

def _mirror_index(index, size):
    """Fold any integer index into [0, size) by half-sample mirroring (d c b a | a b c d)."""
    index = np.mod(index, 2 * size)
    return np.where(index >= size, 2 * size - 1 - index, index)


def rotate(image, angle_deg, order=1):
    """Rotate an (H, W) image about its centre by inverse mapping, mirrored fill.

    Positive angles are counter-clockwise on screen. order 1: bilinear, returns float32 (images);
    order 0: nearest, keeps the dtype (masks keep their values exactly).
    """
    height, width = image.shape
    theta = math.radians(angle_deg)
    cos, sin = math.cos(theta), math.sin(theta)
    v = np.arange(height)[:, None] - (height - 1) / 2          # (H, 1) output row from centre
    u = np.arange(width)[None, :] - (width - 1) / 2            # (1, W) output column from centre
    # inverse map: each output pixel looks up where it came from (rotation by -angle)
    src_col = cos * u - sin * v + (width - 1) / 2              # (H, W) float64
    src_row = sin * u + cos * v + (height - 1) / 2             # (H, W) float64
    flat = np.asarray(image).ravel()                           # (H * W,) gathers are faster flat
    if order == 0:
        rows = _mirror_index(np.floor(src_row + 0.5).astype(np.int64), height)
        cols = _mirror_index(np.floor(src_col + 0.5).astype(np.int64), width)
        return flat[rows * width + cols]                       # (H, W) input dtype
    if order != 1:
        raise ValueError(f"order must be 0 (nearest) or 1 (bilinear), got {order}")
    row0, col0 = np.floor(src_row), np.floor(src_col)
    fr = (src_row - row0).astype(np.float32)                   # (H, W) float32 in [0, 1)
    fc = (src_col - col0).astype(np.float32)
    r0, c0 = row0.astype(np.int64), col0.astype(np.int64)
    r0, r1 = _mirror_index(r0, height) * width, _mirror_index(r0 + 1, height) * width
    c0, c1 = _mirror_index(c0, width), _mirror_index(c0 + 1, width)
    flat = flat.astype(np.float32)                             # (H * W,) float32
    top = flat[r0 + c0] * (1 - fc) + flat[r0 + c1] * fc
    bottom = flat[r1 + c0] * (1 - fc) + flat[r1 + c1] * fc
    return top * (1 - fr) + bottom * fr                        # (H, W) float32


# --rotation (train.py): how the DA rotation is drawn and resampled. "any" is the thesis's (§4.3.2,
# App. B: rotation_range=180, bilinear image); "any-nearest" draws the same angles but resamples the
# image by nearest neighbour as the mask, so every output pixel is a measured one (no smoothing);
# "right" turns by a multiple of 90 degrees, an exact permutation of the pixels.
ROTATIONS = ("any", "any-nearest", "right")


def _random_geometry(rng, rotation="any"):
    """Draw one DA transform (angle in degrees, horizontal flip, vertical flip); flips p=0.5.

    "any", "any-nearest": angle uniform in [-180, 180] (a float). "right": 0, 90, 180 or 270 with
    equal chance, as an int, which `_apply_geometry` applies with np.rot90 (no resampling).
    """
    if rotation == "right":
        angle = 90 * int(rng.integers(4))
    elif rotation in ("any", "any-nearest"):
        angle = rng.uniform(-180.0, 180.0)
    else:
        raise ValueError(f"rotation must be one of {', '.join(ROTATIONS)}, got {rotation!r}")
    return angle, rng.random() < 0.5, rng.random() < 0.5


def _image_order(rotation):
    """Interpolation order for the image (0 nearest, 1 bilinear); masks are always nearest."""
    return 0 if rotation == "any-nearest" else 1


def _apply_geometry(array, geometry, order):
    angle, hflip, vflip = geometry
    if isinstance(angle, int):                                 # a right angle: exact, any dtype
        out = np.rot90(array, angle // 90)                     # (T, T) counter-clockwise
    else:
        out = rotate(array, angle, order)                      # (T, T)
    if hflip:
        out = out[:, ::-1]
    if vflip:
        out = out[::-1, :]
    return np.ascontiguousarray(out)


def augment_pair(image, mask, rng, rotation="any"):
    """The same random rotation and flips on image and mask -> (float32 in [0,1], uint8 {0,1})."""
    geometry = _random_geometry(rng, rotation)
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    image = _apply_geometry(image.astype(np.float32) / scale, geometry, _image_order(rotation))
    mask = _apply_geometry(mask, geometry, order=0)            # (T, T) uint8 in {0, 1}
    return np.clip(image, 0.0, 1.0), mask                      # (T, T) float32 in [0, 1]


class TileDataset(torch.utils.data.Dataset):
    """Tiles as float32 tensors (1, T, T); randomness from np.random.default_rng([seed, epoch, i]).

    With masks: (image in [0,1], mask in {0,1}). Without masks and with `degrade` (the pretext
    task of §3.3): (degraded image, clean image), both in [0, 1]. Without either: (image, image),
    the reconstruction target of the Attention Y-Net (App. A). `rotation`: one of ROTATIONS.
    Call set_epoch before each epoch (with DataLoader workers, do not use persistent_workers,
    which keep a stale copy).
    """

    def __init__(self, images, masks=None, augment=False, seed=0, degrade=None, rotation="any"):
        if masks is not None and degrade is not None:
            raise ValueError("degrade is for the denoising pretext task, which takes no masks")
        if masks is not None and masks.shape != images.shape:
            raise ValueError(f"images {images.shape} and masks {masks.shape} differ in shape")
        if rotation not in ROTATIONS:
            raise ValueError(f"rotation must be one of {', '.join(ROTATIONS)}, got {rotation!r}")
        self.images, self.masks = images, masks                # (n, T, T) uint8 each
        self.augment, self.seed, self.degrade, self.epoch = augment, seed, degrade, 0
        self.rotation = rotation

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __len__(self):
        return len(self.images)

    def _pick(self, i, rng):
        """Sample i before augmentation -> ((T, T) uint8, (T, T) uint8 or None)."""
        return self.images[i], None if self.masks is None else self.masks[i]

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, self.epoch, i])
        image, mask = self._pick(i, rng)                        # (T, T) uint8 each
        if mask is not None:
            if self.augment:
                x, y = augment_pair(image, mask, rng, self.rotation)
            else:
                x, y = image.astype(np.float32) / 255.0, mask
            return _tensor(x), _tensor(y)
        if self.augment:
            x = _apply_geometry(image.astype(np.float32), _random_geometry(rng, self.rotation),
                                _image_order(self.rotation))
            image = np.clip(np.round(x), 0, 255).astype(np.uint8)  # (T, T) uint8
        clean = image.astype(np.float32) / 255.0                # (T, T) float32 in [0, 1]
        if self.degrade is None:
            return _tensor(clean), _tensor(clean)
        degraded = np.asarray(self.degrade(image, rng), dtype=np.uint8)  # (T, T) uint8
        return _tensor(degraded.astype(np.float32) / 255.0), _tensor(clean)


class CropDataset(TileDataset):
    """A fresh random T x T window of the slices for every (seed, epoch, index), then the DA.

    The slices are mirror-padded to a multiple of T as for the tile grid (§4.3.1), and a window is
    any T x T square inside the padded slice: slice, top row and left column uniform, drawn from
    default_rng([seed, epoch, i]) before the augmentation. An epoch holds `length` samples, by
    default as many as the tile grid of the same slices (so an epoch costs what it costs with
    tiles). Not in the thesis, which cuts a fixed grid: here every epoch sees new windows.
    """

    def __init__(self, slices, masks=None, tile=256, length=None, augment=False, seed=0,
                 degrade=None, rotation="any"):
        padded = pad_to_multiple(slices, tile)                 # (n, H', W') uint8
        super().__init__(padded, None if masks is None else pad_to_multiple(masks, tile),
                         augment=augment, seed=seed, degrade=degrade, rotation=rotation)
        n, height, width = padded.shape
        self.tile = tile
        self.length = n * (height // tile) * (width // tile) if length is None else int(length)

    def __len__(self):
        return self.length

    def _pick(self, i, rng):
        n, height, width = self.images.shape
        k = int(rng.integers(n))
        top, left = int(rng.integers(height - self.tile + 1)), int(rng.integers(width - self.tile + 1))
        window = (k, slice(top, top + self.tile), slice(left, left + self.tile))
        return self.images[window], None if self.masks is None else self.masks[window]


def _tensor(array):
    return torch.from_numpy(np.asarray(array, dtype=np.float32).copy())[None]  # (1, T, T)


# ---------------------------------------------------------------- synthetic EM (SPEC §7)

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
    """The built-in EM-like data set (SPEC §7) -> ((n, H, W) uint8, (n, H, W) uint8 in {0, 1}).

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
