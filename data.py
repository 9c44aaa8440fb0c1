"""Data: EM data sets on disk, 256x256 training tiles, the validation split and the augmentation.

Thesis: §4.1 (Lucchi++ and Kasthuri++ as stacks of 2D slices), §4.3.1 (mirror padding to a multiple
of 256, sequential non-overlapping 256x256 patches, intensities in [0, 1]), §4.3.2 (10% of the
training patches at random for validation; on-the-fly rotations and flips, the augmentation of [34]).
`python data.py DIR` reports what a data-set folder holds before hours of training (docs/data.md), and
`training_sets` cuts a run's training and validation sets from its slices.
What a file's pixels mean (large slices, 16-bit intensities, mask values, label images): imagefiles.py.

Choices where the thesis code is silent or its libraries disagree:
- Images and masks pair in natural name order ('2' before '10'), the slice numbers of their names compared.
- A folder with no test split (`images` + `masks`, or `train/x` + `train/y` alone) gives its last 20% of
  labelled slices in natural order as the test split (`hold_out`): neighbouring slices of a stack are
  nearly the same image, so a random pick would put near-copies of test slices into training; one block
  at the end touches the training slices at one border only. It needs no seed: every run, whatever its
  seed, is scored on the same slices, as the thesis's runs are on its fixed test volumes.
- Slices of different sizes in one split stay a list of (H, W) arrays; tiles and crops are cut per slice.
- Rotation fill is "reflect" as Keras's ImageDataGenerator means it (`rotation_range=180` in
  App. B is its argument): d c b a | a b c d | d c b a, the edge pixel repeated, i.e. NumPy's
  'symmetric'. imgaug's and scikit-image's "reflect" skip the edge pixel (NumPy 'reflect').
- Positive angles turn the image counter-clockwise on screen: rotate(x, 90) == np.rot90(x).
Shapes: n slices or tiles, H x W a slice, T the tile side; NumPy comments give dtype and range.
"""
import concurrent.futures
import math
import os
import re
import sys
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch

import cli
import imagefiles
from imagefiles import DataError, size_text

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff")


# ---------------------------------------------------------------- loading (§4.1)
# A data set is a folder in our layout, in the one the Lucchi++ and Kasthuri++ zips unpack to (§4.1.1-4.1.2),
# or a flat images + masks pair, folder names in any case; each holds one file per slice or one TIFF stack.

LAYOUTS = {
    "train/x, train/y, test/x, test/y": {"train": ("train/x", "train/y"), "test": ("test/x", "test/y")},
    "Train_In, Train_Out, Test_In, Test_Out (the Lucchi++ / Kasthuri++ zips)":
        {"train": ("Train_In", "Train_Out"), "test": ("Test_In", "Test_Out")},
    "images, masks": {"train": ("images", "masks")},
}
LAYOUT_HELP = ("train/x, train/y, test/x, test/y; the zips' Train_In, Train_Out, Test_In, Test_Out; or, with "
               "the test split held out, train/x and train/y alone or images and masks")
HOLD_OUT = 0.2  # the share of a folder's labelled slices held out as its test split: the last ones


def _child(folder, name):
    """The entry of `folder` called `name` in any case ('train/x' walks two levels), or None."""
    for part in name.split("/"):
        found = (sorted(n for n in os.listdir(folder) if n.lower() == part.lower())
                 if os.path.isdir(folder) else [])
        if not found:
            return None
        folder = os.path.join(folder, found[0])
    return folder


def _present(root, name):
    """Whether `root` holds layout `name`: its images folders (both folders of a flat pair)."""
    splits = LAYOUTS[name]
    if "test" not in splits:
        return all(_child(root, rel) for rel in splits["train"])
    return any(_child(root, x) for x, _ in splits.values())


def find_layout(root):
    """(layout name, {split: (images folder, masks folder)}) of a data-set folder, known by its images
    folders; a missing folder comes back as the path it would have (an App. A target has no masks). A folder
    without test images but with training masks holds out its test split: both splits name the same pair."""
    if not os.path.isdir(root):
        raise DataError(f"{root}: data folder not found; pass a folder holding {LAYOUT_HELP}")
    found = [name for name in LAYOUTS if _present(root, name)]
    if len(found) > 1:
        raise DataError(f"{root}: holds the folders of {' and of '.join(found)}; keep one layout in a "
                        "data-set folder")
    if not found:
        inner = [n for n in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, n))
                 and any(_present(os.path.join(root, n), name) for name in LAYOUTS)]
        hint = f"; {os.path.join(root, inner[0])} does, pass that folder" if inner else ""
        raise DataError(f"{root}: no data set here: expected {LAYOUT_HELP}{hint}")
    name = found[0]
    folders = {split: tuple(_child(root, rel) or os.path.join(root, rel) for rel in pair)
               for split, pair in LAYOUTS[name].items()}
    no_test = "test" not in folders or not os.path.isdir(folders["test"][0])
    if no_test and os.path.isdir(folders["train"][1]):
        pair = ", ".join(os.path.relpath(f, root) for f in folders["train"])
        name = f"{pair} (no test split: the last {100 * HOLD_OUT:g}% of the slices held out)"
        folders["test"] = folders["train"]
    return name, folders


def hold_out(n, folder):
    """{"train": indices, "test": indices} of the n labelled slices of a folder without a test split: the
    last HOLD_OUT of them in natural order, rounded up, at least one (see the module docstring)."""
    if n < 2:
        raise DataError(f"{folder}: holds {n} labelled slice; a data set without a test split holds out "
                        f"its last {100 * HOLD_OUT:g}% for testing and needs 2 slices at least: add "
                        "slices, or put test slices in test/x and test/y")
    n_test = max(1, math.ceil(HOLD_OUT * n - 1e-9))
    return {"train": range(n - n_test), "test": range(n - n_test, n)}


def image_files(folder):
    """Image files of `folder` in natural order (hidden files such as '._x.tif' are skipped)."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: folder not found; a data set needs {LAYOUT_HELP}")
    names = sorted((n for n in os.listdir(folder)
                    if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")),
                   key=imagefiles.natural_key)
    if not names:
        raise DataError(f"{folder}: no image files (.png, .tif, .tiff) in this folder; put one "
                        "file per slice or one multi-page TIFF stack there")
    return [os.path.join(folder, n) for n in names]


def _read_folder(folder, is_mask, note):
    """Every page of every file in `folder` as stored -> (raw pages, one name per page, the files)."""
    files = image_files(folder)
    raw = [imagefiles.read_pages(path, is_mask, note) for path in files]
    names = [name for path, pages in zip(files, raw) for name in imagefiles.page_names(path, len(pages))]
    return [page for pages in raw for page in pages], names, files


def pair_files(n_images, x_files, n_masks, y_files, x_dir, y_dir):
    """Refuse slices and masks that do not pair -> whether their slice numbers were compared.

    Files pair in natural name order. When both folders hold one file per slice and both sets of names
    carry slice numbers (`imagefiles.slice_numbers`), each pair must carry the same number, and a
    folder with a different count of files is refused naming the first image with no mask of its
    number. Stacks pair page by page.
    """
    if len(x_files) != n_images or len(y_files) != n_masks:  # stacks: nothing to compare but the counts
        if n_masks != n_images:
            raise DataError(f"{x_dir} holds {n_images} slices but {y_dir} holds {n_masks} masks; every slice "
                            "needs exactly one mask")
        return False
    xs, ys = imagefiles.slice_numbers(x_files), imagefiles.slice_numbers(y_files)
    numbered = None not in xs and None not in ys
    if len(x_files) != len(y_files):
        spare = [(f, n) for f, n in zip(x_files, xs) if numbered and n not in set(ys)]
        lonely = (f"; {spare[0][0]} has none (no mask file carries slice number {spare[0][1]})"
                  if spare else "")
        raise DataError(f"{x_dir} holds {len(x_files)} images but {y_dir} holds {len(y_files)} "
                        f"masks{lonely}; every image needs exactly one mask")
    for image, mask, a, b in zip(x_files, y_files, xs, ys):
        if numbered and a != b:
            raise DataError(f"{image} would be paired with {mask}, but their names carry slice numbers "
                            f"{a} and {b}; rename the files so that each image and its mask carry the same "
                            "number (files pair in natural name order: 2 before 10)")
    return numbered


@dataclass
class Split:
    """One split of a data set as loaded, with what the data report tells about it.

    images and masks are sequences of (H, W) slices: one (n, H, W) array when all slices of the split share
    a size, a list of (H, W) arrays when they differ (mask k always the size of slice k).
    """
    images: object          # (n, H, W) uint8, or a list of n (H, W) uint8
    masks: object           # the same in {0, 1}, or None
    image_names: list       # one per slice: its file, or "file (page k)" in a stack
    mask_names: list        # the same for the masks, or None
    layout: str             # the LAYOUTS entry found
    folders: tuple          # (images folder, masks folder)
    notes: dict             # "images"/"masks": what imagefiles.read_pages and its conversions noted
    numbers_checked: bool   # whether the pairs' slice numbers were compared
    split: str = "train"
    intensity: tuple = None  # (low, high) raw values mapped onto 0..255, or None (values kept)
    held_out: str = None    # how the test split was held out of a folder without one, or None

    @property
    def foreground(self):
        """The share of mask pixels that are foreground, or None without masks."""
        if self.masks is None:
            return None
        return sum(int(m.sum()) for m in self.masks) / max(1, sum(m.size for m in self.masks))


def _stack(slices):
    """(n, H, W) when every (H, W) slice has one size (np.stack), else the list itself."""
    return np.stack(slices) if len({s.shape for s in slices}) == 1 else list(slices)


def read_split(root, split, masks=True, intensity=None):
    """Load one split of a data-set folder (any layout) -> Split; every page counts as a slice.

    intensity: (low, high) raw values mapped onto 0..255 for 16-bit and 32-bit slices, or None: 8-bit
    slices kept as they are, deeper ones by the range of the split's own pixels (imagefiles.to_uint8); read
    the training split first and the test split with its `intensity`. A missing folder, an unreadable
    slice, or masks that do not pair raise DataError naming the fix.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    layout, folders = find_layout(root)
    x_dir, y_dir = folders[split]
    notes = {"images": imagefiles.new_note(), "masks": imagefiles.new_note()}
    images, image_names, x_files = _read_folder(x_dir, False, notes["images"])
    labels, label_names, checked = None, None, False
    if masks:
        labels, label_names, y_files = _read_folder(y_dir, True, notes["masks"])
        checked = pair_files(len(images), x_files, len(labels), y_files, x_dir, y_dir)
        for image, (label, _), image_name, label_name in zip(images, labels, image_names, label_names):
            if image.shape != label.shape:
                raise DataError(f"{label_name}: mask is {size_text(label.shape)} but its image "
                                f"{image_name} is {size_text(image.shape)} (HxW); a mask must match "
                                "its image pixel for pixel")
    held_out = None
    if folders["train"] == folders["test"]:
        keep = hold_out(len(images), x_dir)
        test = keep["test"]
        held_out = (f"the last {len(test)} of {len(images)} labelled slices in natural order "
                    f"({os.path.relpath(image_names[test[0]], root)} to "
                    f"{os.path.relpath(image_names[test[-1]], root)}), {100 * HOLD_OUT:g}% rounded up")
        pick = lambda items: None if items is None else [items[k] for k in keep[split]]  # noqa: E731
        images, image_names, labels, label_names = map(pick, (images, image_names, labels, label_names))
    images = imagefiles.to_uint8(images, image_names, notes["images"], intensity)
    labels = imagefiles.to_binary(labels, notes["masks"]) if masks else None
    return Split(_stack(images), _stack(labels) if masks else None, image_names, label_names, layout,
                 (x_dir, y_dir), notes, checked, split, notes["images"]["intensity"], held_out)


def warn_notes(part):
    """The notes of a loaded Split as warnings, one per folder and kind. Returns the Split."""
    for folder, key in zip(part.folders, ("images", "masks")):
        imagefiles.warn_about(folder, part.notes[key])
    return part


def read_train_test(root, masks=True, intensity=None):
    """(train, test) Splits of a data-set folder, their notes as warnings, the test slices mapped as the
    training ones: `intensity`, or the map the training split's own pixels give (a 16-bit set's)."""
    train = warn_notes(read_split(root, "train", masks, intensity))
    return train, warn_notes(read_split(root, "test", masks, train.intensity))


def load_split(root, split, masks=True, intensity=None):
    """Load `split` of a data-set folder -> (images, masks or None) as Split holds them, `read_split` with
    its notes as warnings."""
    part = warn_notes(read_split(root, split, masks, intensity))
    return part.images, part.masks


# ---------------------------------------------------------------- the data report: python data.py DIR

NO_FOREGROUND = {  # why a split whose masks hold no foreground pixel is a problem
    "train": "train.py refuses a training split without foreground, except for a pretext run (--pretext)",
    "test": "IoU_F is then 1 for a slice predicted empty and 0 for any false positive (an empty prediction "
            "of an empty mask scores 1), a score that says nothing about finding mitochondria"}


def _modes(note):
    return ", ".join(f"{imagefiles.MODES.get(m, m)} ({m})" for m in sorted(note.get("modes", ())))


def slices_text(slices):
    """'12 slices of 768x1024', or '12 slices: 8 of 768x1024, 4 of 512x600' when their sizes differ."""
    counts = Counter(s.shape for s in slices).most_common()
    if len(counts) == 1:
        return f"{len(slices)} slices of {size_text(counts[0][0])}"
    return f"{len(slices)} slices: " + ", ".join(f"{k} of {size_text(shape)}" for shape, k in counts)


def describe_split(s, root):
    """The report's lines for one loaded Split: sizes, types, conversions, mask values, pairs."""
    rel = lambda path: os.path.relpath(path, root)  # noqa: E731
    sizes = slices_text(s.images) + ("," if isinstance(s.images, list) else "")  # a list: sizes differ
    lines = [f"{s.split}: {sizes} from {rel(s.folders[0])}, images {_modes(s.notes['images'])}"]
    converted = sorted(s.notes["images"].get("converted", ())) + sorted(s.notes["masks"].get("converted", ()))
    lines.append("  converted: "
                 f"{'; '.join(converted) if converted else 'nothing (8-bit grey images, grey masks)'}")
    if s.held_out:
        lines.append(f"  test split held out: {s.held_out}")
    if s.masks is None:
        lines.append(f"  masks: none ({rel(s.folders[1])} not found): an unlabelled set, for adapt.py "
                     "--target")
        return lines
    lines.append(f"  masks {_modes(s.notes['masks'])}: {imagefiles.mask_summary(s.notes['masks'])}")
    lines.append(f"  foreground: {100 * s.foreground:.2f}% of the pixels" if s.foreground
                 else f"  foreground: none, not one pixel; a problem: {NO_FOREGROUND[s.split]}")
    pairs = "; ".join(f"{rel(a)} + {rel(b)}" for a, b in zip(s.image_names[:3], s.mask_names[:3]))
    how = "slice numbers agree" if s.numbers_checked else "names carry no slice numbers to compare"
    lines.append(f"  pairs in natural name order ({how}): {pairs}" + (" ..." if len(s.images) > 3 else ""))
    return lines


def report(root, out=print):
    """The data report of a data-set folder, split by split; raises DataError at the first problem. The
    test split is read with the training split's intensity map, as a run reads it."""
    layout, folders = find_layout(root)
    out(f"{root}: layout {layout}")
    splits, intensity = {}, None
    for split in ("train", "test"):  # each split's lines before the next is read: a problem comes last
        splits[split] = read_split(root, split, os.path.isdir(folders[split][1]), intensity)
        intensity = splits[split].intensity
        out("\n".join(describe_split(splits[split], root)))
    unlabelled = [s for s, part in splits.items() if part.masks is None]
    empty = [s for s, part in splits.items() if part.foreground == 0]
    n_train, n_test = len(splits["train"].images), len(splits["test"].images)
    if empty:
        out(f"not ok: the {' and '.join(empty)} masks hold no foreground pixel (see above)")
    else:
        out(f"ok, without masks for {' and '.join(unlabelled)}: train.py --data needs them; adapt.py "
            "--target reads none" if unlabelled else
            f"ok: {n_train} train and {n_test} test slices, each paired with its own mask")
    return splits


def main(argv=None):
    """python data.py DIR: the data report before hours of training. Exit 0 when it ends "ok", 1 when it
    names a problem in readable data (masks without foreground), 2 on the first unreadable one."""
    return cli.main(report_command, argv)


def report_command(args):
    if len(args) != 1 or args[0].startswith("-"):
        raise cli.UsageError(f"usage: python data.py DIR  (a data-set folder: {LAYOUT_HELP})")
    return int(any(part.foreground == 0 for part in report(args[0]).values()))


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
    """(n, H, W) -> (n * tiles per slice, T, T): sequential tiles, row-major, slices in order. A list of
    (H, W) slices of different sizes: each padded on its own, their tiles concatenated in slice order."""
    if not isinstance(stack, np.ndarray):
        return np.concatenate([extract_tiles(s[None], tile) for s in stack])
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


def take(stack, idx):
    """The slices (or tiles) of `stack` at the indices `idx`: an array for an array, else a list."""
    return None if stack is None else stack[idx] if isinstance(stack, np.ndarray) else [stack[i] for i in idx]


def training_sets(x, y, *, tile, sampling, val_fraction, augment, rotation, seed, degrade, source):
    """(training set, validation set) of §4.3.1-4.3.2 from training slices x, y (None in a pretext run),
    split with `seed`. sampling "tiles": the grid of tiles, a random val_fraction of them held out;
    "crops": whole slices (CropDataset cuts fresh windows) and the grid tiles of a random val_fraction of
    the slices. degrade: the pretext's degradation of an input (§3.3), or None; source names the data."""
    tiles = lambda a: None if a is None else extract_tiles(a, tile)  # noqa: E731  (n, T, T) uint8
    common = {"augment": augment, "seed": seed, "degrade": degrade, "rotation": rotation}
    if sampling == "crops":
        train_idx, val_idx = split_validation(len(x), val_fraction, seed=seed)  # whole slices
        train_set = CropDataset(take(x, train_idx), take(y, train_idx), tile=tile, **common)
        val = (tiles(take(x, val_idx)), tiles(take(y, val_idx)))
    else:
        tx, ty = tiles(x), tiles(y)
        train_idx, val_idx = split_validation(len(tx), val_fraction, seed=seed)
        train_set = TileDataset(tx[train_idx], take(ty, train_idx), **common)
        val = (tx[val_idx], take(ty, val_idx))
    val_set = TileDataset(*val, augment=False, seed=seed + 10_000, degrade=degrade)
    if len(val_set) == 0 and val_fraction > 0:
        unit = "slice(s)" if sampling == "crops" else f"tile(s) of {tile}px"
        raise DataError(f"{source} gives {len(x)} training {unit}; at least 2 are needed (some go to "
                        "validation): add slices, use a smaller --tile or --val-fraction 0")
    return train_set, val_set


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


def random_geometry(rng, rotation="any"):
    """One DA transform (angle in degrees, horizontal flip, vertical flip), flips p=0.5: for "any" and
    "any-nearest" a float angle uniform in [-180, 180]; for "right" an int 0, 90, 180 or 270 (np.rot90)."""
    if rotation == "right":
        angle = 90 * int(rng.integers(4))
    elif rotation in ("any", "any-nearest"):
        angle = rng.uniform(-180.0, 180.0)
    else:
        raise ValueError(f"rotation must be one of {', '.join(ROTATIONS)}, got {rotation!r}")
    return angle, rng.random() < 0.5, rng.random() < 0.5


def image_order(rotation):
    """Interpolation order for the image (0 nearest, 1 bilinear); masks are always nearest."""
    return 0 if rotation == "any-nearest" else 1


def apply_geometry(array, geometry, order):
    """A (T, T) array turned and flipped by `geometry` (random_geometry), resampled with `order`."""
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
    geometry = random_geometry(rng, rotation)
    scale = 255.0 if image.dtype == np.uint8 else 1.0
    image = apply_geometry(image.astype(np.float32) / scale, geometry, image_order(rotation))
    mask = apply_geometry(mask, geometry, order=0)            # (T, T) uint8 in {0, 1}
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
        if masks is not None and [m.shape for m in masks] != [a.shape for a in images]:
            raise ValueError("images and masks differ in shape")
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
            x = apply_geometry(image.astype(np.float32), random_geometry(rng, self.rotation),
                                image_order(self.rotation))
            image = np.clip(np.round(x), 0, 255).astype(np.uint8)  # (T, T) uint8
        clean = image.astype(np.float32) / 255.0                # (T, T) float32 in [0, 1]
        if self.degrade is None:
            return _tensor(clean), _tensor(clean)
        degraded = np.asarray(self.degrade(image, rng), dtype=np.uint8)  # (T, T) uint8
        return _tensor(degraded.astype(np.float32) / 255.0), _tensor(clean)


class CropDataset(TileDataset):
    """A fresh random T x T window of the slices for every (seed, epoch, index), then the DA.

    The slices are mirror-padded to a multiple of T as for the tile grid (§4.3.1), each on its own (a
    slice smaller than T too), and a window is any T x T square inside a padded slice: slice, top row and
    left column drawn from default_rng([seed, epoch, i]) before the augmentation, the slice uniformly when
    all share a size, else in proportion to its grid tiles. An epoch holds `length` samples, by default as
    many as the tile grid of the same slices (so an epoch costs what it costs with tiles). Not in the
    thesis, which cuts a fixed grid: here every epoch sees new windows. `slices`: (n, H, W) or a list.
    """

    def __init__(self, slices, masks=None, tile=256, length=None, augment=False, seed=0,
                 degrade=None, rotation="any"):
        pad = lambda a: None if a is None else [pad_to_multiple(s, tile) for s in a]  # noqa: E731
        padded, padded_masks = pad(slices), pad(masks)        # n x (H', W') uint8
        tiles = np.array([(h // tile) * (w // tile) for h, w in (s.shape for s in padded)])  # (n,) int64
        if len({s.shape for s in padded}) == 1:               # one size: a stack, drawn as the grid weighs
            padded, padded_masks = np.stack(padded), None if masks is None else np.stack(padded_masks)
        super().__init__(padded, padded_masks, augment=augment, seed=seed, degrade=degrade, rotation=rotation)
        self.tile = tile
        self.weights = None if isinstance(padded, np.ndarray) else tiles / tiles.sum()
        self.length = int(tiles.sum()) if length is None else int(length)

    def __len__(self):
        return self.length

    def _pick(self, i, rng):
        n = len(self.images)
        k = int(rng.integers(n)) if self.weights is None else int(rng.choice(n, p=self.weights))
        height, width = self.images[k].shape
        top, left = int(rng.integers(height - self.tile + 1)), int(rng.integers(width - self.tile + 1))
        rows, cols = slice(top, top + self.tile), slice(left, left + self.tile)
        return self.images[k][rows, cols], None if self.masks is None else self.masks[k][rows, cols]


def one_batch_ahead(loader):
    """`loader`'s batches, in its order, while a background thread already reads the next one.

    Without DataLoader worker processes (a CPU run) each batch is read and augmented between two
    training steps, and the step waits for it. The thread reads the next batch during the step instead,
    on a core the step leaves free (the demo trains on one thread). The batches are the same: each
    sample's randomness comes from its own seed (TileDataset), and one thread reads them in turn.
    """
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    batches = iter(loader)
    try:
        upcoming = pool.submit(next, batches, None)
        while (batch := upcoming.result()) is not None:
            upcoming = pool.submit(next, batches, None)  # read during the caller's step
            yield batch
    finally:
        pool.shutdown(cancel_futures=True)


def _tensor(array):
    return torch.from_numpy(np.asarray(array, dtype=np.float32).copy())[None]  # (1, T, T)


if __name__ == "__main__":
    sys.exit(main())
