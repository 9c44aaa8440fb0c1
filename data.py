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
import re
import warnings
from collections import Counter
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

import cli
from degrade import convolve_separable, gaussian_kernel1d

IMAGE_EXTENSIONS = (".png", ".tif", ".tiff")


class DataError(cli.UsageError):
    """Bad input data; the message names the file or folder, what is wrong and how to fix it."""


# ---------------------------------------------------------------- loading (§4.1)
# A data set is a folder in one of two layouts: ours, or the one the Lucchi++ and Kasthuri++ zips
# unpack to (§4.1.1-4.1.2; their images sit in Train_In/Test_In, their labels in Train_Out/Test_Out).
# Folder names are matched without regard to case. Each images/masks folder holds one file per slice
# or one multi-page TIFF stack.

LAYOUTS = {
    "train/x, train/y, test/x, test/y": {"train": ("train/x", "train/y"), "test": ("test/x", "test/y")},
    "Train_In, Train_Out, Test_In, Test_Out (the Lucchi++ / Kasthuri++ zips)":
        {"train": ("Train_In", "Train_Out"), "test": ("Test_In", "Test_Out")},
}
LAYOUT_HELP = "train/x, train/y, test/x, test/y, or the zips' Train_In, Train_Out, Test_In, Test_Out"


def _child(folder, name):
    """The entry of `folder` called `name` in any case ('train/x' walks two levels), or None."""
    for part in name.split("/"):
        if not os.path.isdir(folder):
            return None
        found = sorted(n for n in os.listdir(folder) if n.lower() == part.lower())
        if not found:
            return None
        folder = os.path.join(folder, found[0])
    return folder


def find_layout(root):
    """(layout name, {split: (images folder, masks folder)}) of a data-set folder.

    The layout is known by its images folders (either split); a folder that does not exist is
    returned as the path it would have (an unlabelled target set of App. A has no masks).
    """
    if not os.path.isdir(root):
        raise DataError(f"{root}: data folder not found; pass a folder holding {LAYOUT_HELP}")
    found = [name for name, splits in LAYOUTS.items() if any(_child(root, x) for x, _ in splits.values())]
    if len(found) > 1:
        raise DataError(f"{root}: holds both train/x and Train_In; keep one layout in a data-set folder")
    if not found:
        inner = [n for n in sorted(os.listdir(root)) if os.path.isdir(os.path.join(root, n))
                 and any(_child(os.path.join(root, n), x) for s in LAYOUTS.values() for x, _ in s.values())]
        hint = f"; {os.path.join(root, inner[0])} does, pass that folder" if inner else ""
        raise DataError(f"{root}: no data set here: expected {LAYOUT_HELP}{hint}")
    name = found[0]
    folders = {split: tuple(_child(root, rel) or os.path.join(root, rel) for rel in pair)
               for split, pair in LAYOUTS[name].items()}
    return name, folders


def natural_key(name):
    """Sort key that reads runs of digits as numbers, so 'mask2.png' < 'mask10.png' (ties: by name)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def slice_numbers(names):
    """The slice number each file name carries, or None where it cannot be told.

    The numbers of a name are its runs of digits (extension excluded). When every name of the folder
    carries as many numbers, the slice number is the last one that changes from file to file (a date
    or a '_v2' that all names share is not it); a single file's is its last number. Where the names
    carry different counts of numbers, or none, no slice number is trusted (None for all).
    """
    numbers = [[int(d) for d in re.findall(r"\d+", os.path.splitext(os.path.basename(n))[0])] for n in names]
    counts = {len(ns) for ns in numbers}
    if len(counts) != 1 or counts == {0}:
        return [None] * len(names)
    varying = [k for k in range(len(numbers[0])) if len({ns[k] for ns in numbers}) > 1]
    position = varying[-1] if varying else -1
    return [ns[position] for ns in numbers]


def _image_files(folder):
    """Image files of `folder` in natural order (hidden files such as '._x.tif' are skipped)."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: folder not found; a data set needs {LAYOUT_HELP} "
                        "(images in x or *_In, masks in y or *_Out)")
    names = sorted((n for n in os.listdir(folder)
                    if n.lower().endswith(IMAGE_EXTENSIONS) and not n.startswith(".")), key=natural_key)
    if not names:
        raise DataError(f"{folder}: no image files (.png, .tif, .tiff) in this folder; put one "
                        "file per slice or one multi-page TIFF stack there")
    return [os.path.join(folder, n) for n in names]


def image_paths(path, role="images"):
    """One image file, a folder of them (natural order), or a data-set folder -> list of paths.

    A data-set folder gives its test split's images (role "images") or masks (role "masks").
    """
    if os.path.isfile(path):
        if not path.lower().endswith(IMAGE_EXTENSIONS):
            raise DataError(f"{path}: not a .png, .tif or .tiff file; pass an image, a multi-page "
                            "TIFF stack or a folder of them")
        return [path]
    if os.path.isdir(path) and not any(n.lower().endswith(IMAGE_EXTENSIONS) for n in os.listdir(path)):
        try:
            _, folders = find_layout(path)
        except DataError:
            pass  # not a data set either: _image_files names the problem
        else:
            return _image_files(folders["test"][role == "masks"])
    return _image_files(path)


def mask_paths(path, image_dir):
    """The mask files for the images of folder `image_dir`: a mask file, a folder of masks, or a
    data-set folder, from which the masks of the split whose images folder is `image_dir` are taken
    (its test masks when `image_dir` is none of its folders)."""
    if os.path.isdir(path) and image_dir:
        try:
            _, folders = find_layout(path)
        except DataError:
            folders = {}
        for x_dir, y_dir in folders.values():
            if os.path.realpath(x_dir) == os.path.realpath(image_dir):
                return _image_files(y_dir)
    return image_paths(path, role="masks")


def _grey(page, name):
    """One Pillow page of an image file -> ((H, W) uint8, note on the conversion or None)."""
    mode = page.mode
    if mode == "L":
        return np.asarray(page, dtype=np.uint8), None           # (H, W) uint8 in [0, 255]
    if mode == "1":
        return np.asarray(page, dtype=np.uint8) * 255, "1-bit images scaled to 0/255"
    if mode == "F":
        raise DataError(f"{name}: floating-point image; save it as 8-bit (or 16-bit) grey")
    if mode.startswith("I"):
        raw = np.asarray(page).astype(np.int64)                 # (H, W) int64
        if raw.min() < 0 or raw.max() > 65535:
            raise DataError(f"{name}: integer values outside 0..65535; save it as 8-bit or 16-bit grey")
        # one fixed map for every slice, so relative intensities survive across the stack
        return ((raw + 128) // 257).astype(np.uint8), "16-bit images divided by 257 to 8-bit"
    # RGB, RGBA, P, LA, CMYK...: Pillow's ITU-R 601-2 luma, alpha dropped
    return np.asarray(page.convert("L"), dtype=np.uint8), f"{mode} images converted to grey (luminance)"


def _mask_levels(page):
    """One Pillow page of a mask file -> (raw values (H, W), their full scale).

    Colour masks are read from their colour channels (the brightest of R, G, B), never from alpha.
    The full scale is 1 for masks whose values are at most 1 (0/1 and 1-bit masks), else 255 for
    8-bit and 65535 for 16-bit values.
    """
    raw = np.asarray(page)                                      # (H, W) or (H, W, C), any dtype
    if raw.ndim == 3:
        raw = raw[..., :3].max(axis=-1) if raw.shape[-1] >= 3 else raw[..., 0]  # alpha is no label
    if raw.dtype == bool:
        raw = raw.astype(np.uint8)
    top = raw.max() if raw.size else 0
    return raw, (1 if top <= 1 else 255 if top <= 255 else 65535)


def _value_counts(raw):
    """{value: pixels} of a mask page, fast for 8-bit ones."""
    if raw.dtype == np.uint8:
        counts = np.bincount(raw.ravel(), minlength=256)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(raw, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def read_files(paths, is_mask=False, notes=None):
    """Every page of every file -> list of (path, list of (H, W) uint8 pages), one entry per file.

    A multi-page TIFF stack gives one entry with a page per slice. Images: 8-bit grey, or converted
    (colour to luminance, 16-bit divided by 257, 1-bit to 0/255). Masks: a pixel is foreground (1)
    when its value is at least half the mask's full scale, so 0/1, 0/255 and 0/65535 masks keep their
    two levels and a value such as Kasthuri++'s 2 (the empty area outside the imaged region) is
    background. `notes`, a dict, collects what a caller reports: "converted" (one line per kind of
    conversion) and, for masks, "values" ({(value, full scale): pixels}) and "scales"; without it each
    conversion and any mask value besides the two levels is a warning, once per folder. It also
    gathers "modes", the Pillow modes of the pages.
    """
    collect = {} if notes is None else notes
    for key in ("converted", "scales", "modes"):
        collect.setdefault(key, set())
    collect.setdefault("values", Counter())
    files = []
    for path in paths:
        pages = []
        try:
            with Image.open(path) as im:
                n_pages = getattr(im, "n_frames", 1)
                for k in range(n_pages):
                    im.seek(k)
                    name = path if n_pages == 1 else f"{path} (page {k + 1})"
                    collect["modes"].add(im.mode)
                    if not is_mask:
                        array, note = _grey(im, name)
                        collect["converted"] |= {note} - {None}
                    else:
                        raw, scale = _mask_levels(im)
                        collect["values"].update({(v, scale): c for v, c in _value_counts(raw).items()})
                        collect["scales"].add(scale)
                        if np.asarray(im).ndim == 3:
                            collect["converted"].add(f"{im.mode} masks read from their colour channels, "
                                                     "not alpha")
                        array = (raw.astype(np.float64) * 2 >= scale).astype(np.uint8)  # (H, W) {0, 1}
                    pages.append(array)
        except (OSError, ValueError, SyntaxError, EOFError) as e:  # includes UnidentifiedImageError
            reason = " ".join(str(e).split())
            raise DataError(f"{path}: cannot read this file as an image ({reason}); replace or "
                            "remove the corrupt file") from e
        files.append((path, pages))
    if notes is None:
        where = os.path.dirname(paths[0]) if paths else ""
        for line in sorted(collect["converted"]) + [mask_rule(collect["values"])]:
            if line:
                warnings.warn(f"{where}: {line}", stacklevel=2)
    return files


def mask_rule(values):
    """A line naming the mask values found besides the two levels (0 and the full scale) and the rule
    applied to them, or None when every value is one of the two levels. values: {(value, scale): pixels}."""
    extra = sorted((v, s) for v, s in values if v not in (0, s))
    if not extra:
        return None
    scale = max(s for _, s in values)
    shown = ", ".join(f"{v:g}" for v, _ in extra[:6]) + (" ..." if len(extra) > 6 else "")
    pixels = sum(values[e] for e in extra)
    cut = {1: "0.5 of 1", 255: "128 of 255", 65535: "32768 of 65535"}[scale]
    below = [(v, s) for v, s in extra if v * 2 < s]
    low = [f"{v:g}" for v, _ in below]
    low = (", ".join(low) if len(low) <= 3 else f"the {len(low)} values below half") + \
        f" ({sum(values[b] for b in below)} pixels)" + (" is" if len(low) == 1 else " are") + \
        " background" if low else "none is background"
    return (f"masks hold {len(extra)} value{'s' if len(extra) > 1 else ''} besides 0 and {scale} ({shown}) on "
            f"{pixels} pixels; a pixel is foreground when it is at least half the full scale (>= {cut}), "
            f"so {low}")


def _read_folder(folder, is_mask, notes):
    """Every page of every file in `folder` -> (list of (H, W) uint8, one name per page, the files)."""
    arrays, names, files = [], [], read_files(_image_files(folder), is_mask, notes)
    for path, pages in files:
        arrays += pages
        names += [path] if len(pages) == 1 else [f"{path} (page {k + 1})" for k in range(len(pages))]
    return arrays, names, [path for path, _ in files]


def pair_files(images, image_files, masks, mask_files, image_dir, mask_dir):
    """Check that slices and masks pair: by file (names and slice numbers) when both folders hold
    one file per slice, else by page count. Returns whether slice numbers were compared."""
    if len(image_files) == len(images) and len(mask_files) == len(masks):
        return check_pairs(image_files, mask_files, image_dir, mask_dir)
    if len(masks) != len(images):
        raise DataError(f"{image_dir} holds {len(images)} slices but {mask_dir} holds {len(masks)} masks; "
                        "every slice needs exactly one mask")
    return False


def _hw(shape):
    return f"{shape[0]}x{shape[1]}"


def check_pairs(image_files, mask_files, image_dir, mask_dir):
    """Refuse images and masks whose file names carry slice numbers that disagree.

    Files pair in natural order. When both folders hold one file per slice and both sets of names
    carry slice numbers (`slice_numbers`), every pair must carry the same number; a folder with a
    different count of files is refused naming the first image with no mask of its number.
    Returns True when the numbers were checked, False when the names could not tell.
    """
    xs, ys = slice_numbers(image_files), slice_numbers(mask_files)
    numbered = None not in xs and None not in ys
    if len(image_files) != len(mask_files):
        lonely = ""
        if numbered:
            spare = [(f, n) for f, n in zip(image_files, xs) if n not in set(ys)]
            if spare:
                lonely = f"; {spare[0][0]} has none (no mask file carries slice number {spare[0][1]})"
        raise DataError(f"{image_dir} holds {len(image_files)} images but {mask_dir} holds "
                        f"{len(mask_files)} masks{lonely}; every image needs exactly one mask")
    if not numbered:
        return False
    for image, mask, a, b in zip(image_files, mask_files, xs, ys):
        if a != b:
            raise DataError(f"{image} would be paired with {mask}, but their names carry slice numbers {a} and "
                            f"{b}; rename the files so that each image and its mask carry the same number "
                            "(files pair in natural name order: 2 before 10)")
    return True


@dataclass
class Split:
    """One split of a data set as loaded, with what the data report tells about it."""
    images: np.ndarray      # (n, H, W) uint8
    masks: np.ndarray       # (n, H, W) uint8 in {0, 1}, or None
    image_names: list       # one per slice: its file, or "file (page k)" in a stack
    mask_names: list        # the same for the masks, or None
    layout: str             # the LAYOUTS entry found
    folders: tuple          # (images folder, masks folder)
    notes: dict             # "images"/"masks": {"converted", "values", "scales"} from read_files
    numbers_checked: bool   # whether the pairs' slice numbers were compared
    split: str = "train"


def read_split(root, split, masks=True):
    """Load one split of a data-set folder (either layout) -> Split. Every page counts as a slice.

    Raises DataError naming the file and the fix for a missing folder, unreadable or odd-sized
    slices, and images and masks that do not pair.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    layout, folders = find_layout(root)
    x_dir, y_dir = folders[split]
    notes = {"images": {}, "masks": {}}
    images, image_names, image_files = _read_folder(x_dir, False, notes["images"])
    labels, label_names, checked = None, None, False
    if masks:
        labels, label_names, label_files = _read_folder(y_dir, True, notes["masks"])
        checked = pair_files(images, image_files, labels, label_files, x_dir, y_dir)
        for image, label, image_name, label_name in zip(images, labels, image_names, label_names):
            if image.shape != label.shape:
                raise DataError(f"{label_name}: mask is {_hw(label.shape)} but its image "
                                f"{image_name} is {_hw(image.shape)} (HxW); a mask must match "
                                "its image pixel for pixel")
    usual = Counter(a.shape for a in images).most_common(1)[0][0]
    for image, image_name in zip(images, image_names):
        if image.shape != usual:
            raise DataError(f"{image_name}: slice is {_hw(image.shape)} but the other slices of "
                            f"{x_dir} are {_hw(usual)} (HxW); crop or pad the slices of a split to one size")
    return Split(np.stack(images), np.stack(labels) if masks else None, image_names, label_names,
                 layout, (x_dir, y_dir), notes, checked, split)


def load_split(root, split, masks=True):
    """Load `split` of a data-set folder -> ((n, H, W) uint8, (n, H, W) uint8 in {0, 1} or None).

    `read_split` with its notes as warnings (one per folder and kind): conversions, and mask values
    besides the two levels with the rule applied to them.
    """
    s = read_split(root, split, masks)
    for folder, key in zip(s.folders, ("images", "masks")):
        note = s.notes[key]
        for line in sorted(note.get("converted", ())) + [mask_rule(note.get("values", set()))]:
            if line:
                warnings.warn(f"{folder}: {line}", stacklevel=2)
    return s.images, s.masks


# ---------------------------------------------------------------- the data report: python data.py DIR

MODES = {"1": "1-bit", "L": "8-bit grey", "I;16": "16-bit grey", "I;16B": "16-bit grey", "I": "32-bit integer",
         "F": "32-bit float", "RGB": "8-bit RGB", "RGBA": "8-bit RGBA", "P": "8-bit palette", "LA": "grey + alpha"}


def _modes(note):
    return ", ".join(f"{MODES.get(m, m)} ({m})" for m in sorted(note.get("modes", ())))


def describe_split(s, root):
    """The report's lines for one loaded Split: size, types, conversions, mask values, pairs."""
    rel = lambda path: os.path.relpath(path, root)  # noqa: E731
    n, height, width = s.images.shape
    lines = [f"{s.split}: {n} slices of {height}x{width} from {rel(s.folders[0])}, images {_modes(s.notes['images'])}"]
    converted = sorted(s.notes["images"].get("converted", ())) + sorted(s.notes["masks"].get("converted", ()))
    lines.append(f"  converted: {'; '.join(converted) if converted else 'nothing (8-bit grey images, grey masks)'}")
    if s.masks is None:
        lines.append(f"  masks: none ({rel(s.folders[1])} not found): an unlabelled set, for adapt.py --target")
        return lines
    values, rule = s.notes["masks"]["values"], mask_rule(s.notes["masks"]["values"])
    total = sum(values.values())
    at_zero = 100 * sum(c for (v, _), c in values.items() if v == 0) / total
    at_top = 100 * sum(c for (v, scale), c in values.items() if v == scale) / total
    scales = "/".join(str(scale) for scale in sorted(s.notes["masks"]["scales"]))
    lines.append(f"  masks {_modes(s.notes['masks'])}: values 0 ({at_zero:.2f}%) and {scales} ({at_top:.2f}%)"
                 + (f"; {rule}" if rule else ", the upper one foreground"))
    lines.append(f"  foreground: {100 * s.masks.mean():.2f}% of the pixels")
    pairs = "; ".join(f"{rel(a)} + {rel(b)}" for a, b in zip(s.image_names[:3], s.mask_names[:3]))
    how = "slice numbers agree" if s.numbers_checked else "names carry no slice numbers to compare"
    lines.append(f"  pairs in natural name order ({how}): {pairs}" + (" ..." if n > 3 else ""))
    return lines


def report(root, out=print):
    """The data report of a data-set folder, split by split; raises DataError at the first problem."""
    layout, folders = find_layout(root)
    out(f"{root}: layout {layout}")
    splits = {}
    for split in ("train", "test"):
        masks = os.path.isdir(folders[split][1])
        splits[split] = read_split(root, split, masks=masks)
        for line in describe_split(splits[split], root):
            out(line)
    train, test = splits["train"], splits["test"]
    if train.masks is None or test.masks is None:
        out("ok, without masks for " + " and ".join(s for s in splits if splits[s].masks is None)
            + ": train.py --data needs both; adapt.py --target reads none")
    else:
        out(f"ok: {len(train.images)} train and {len(test.images)} test slices, each paired with its own mask")
    return splits


def main(argv=None):
    """python data.py DIR: the data report before hours of training (exit 2 on the first problem)."""
    def run(args):
        if len(args) != 1 or args[0].startswith("-"):
            raise cli.UsageError("usage: python data.py DIR  (a data-set folder: " + LAYOUT_HELP + ")")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the report says it all
            return report(args[0])
    return cli.main(run, argv)


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


if __name__ == "__main__":
    main()
