"""Image files: what the pixels of a slice or mask file mean, read into (H, W) uint8 arrays, and the
order and slice numbers their names carry.

Thesis: §4.1 (the data sets: 8-bit grey slices and their mitochondria masks), §4.3.1 ("the data is
normalized in the [0, 1] range"). The thesis's data sets are 8-bit grey with 0/255 masks; what users bring
besides, and how this module reads it, is our decision, since the thesis is silent:
- Large slices (a whole montage): Pillow's decompression-bomb guard, a defence against untrusted uploads,
  is lifted around our own reads only. Instead a slice is refused when its peak cost (`memory_needed`: 15
  bytes a pixel for 8-bit, 17 for 16-bit, plus the network's working memory on up to 2048x2048 of them)
  exceeds the memory available.
- Deeper intensities (16-bit and 32-bit integer slices, as 12- and 14-bit detectors write them): ONE linear
  map for the whole data set, (low, high) onto 0..255, rounded and clipped, so relative intensities across
  the stack survive. low and high are the 0.01% and 99.99% quantiles of all the split's pixels: the range
  the content uses, which a few hot or dead pixels do not move. A split whose values all lie in 0..255 (an
  8-bit image saved as 16-bit) is kept as it is. 8-bit slices beside deeper ones that need the map are
  refused: no single map fits both.
- Masks: a pixel is foreground when its value is at least half its page's full scale (1, 255 or 65535), so
  0/1, 0/255 and 1-bit masks keep their two levels and Kasthuri++'s 2 (the empty area outside the imaged
  region) is background; colour masks are read from the brightest of R, G, B, never alpha. A mask folder
  that looks like a label image (`is_label_image`, decided over all its pages) is read instead as "every
  non-zero id is foreground".
Shapes: H x W a page; NumPy comments give dtype and range.
"""
import contextlib
import os
import re
import warnings
from collections import Counter

import numpy as np
from PIL import Image

import cli


class DataError(cli.UsageError):
    """Bad input data; the message names the file or folder, what is wrong and how to fix it."""


MODES = {"1": "1-bit", "L": "8-bit grey", "I;16": "16-bit grey", "I;16B": "16-bit grey",
         "I;16L": "16-bit grey", "I;16N": "16-bit grey", "I": "32-bit integer", "F": "32-bit float",
         "RGB": "8-bit RGB", "RGBA": "8-bit RGBA", "P": "8-bit palette", "LA": "grey + alpha"}


def size_text(shape):
    """'768x1024' for an (H, W) shape."""
    return f"{shape[0]}x{shape[1]}"


# ---------------------------------------------------------------- large slices

# A slice's peak cost on its way through the project, per pixel: Pillow's decoded page and NumPy's copy of
# it (twice the page's bytes: 1 for 8-bit grey, palette and 1-bit, 2 for 16-bit, 4 for 32-bit and colour),
# the uint8 slice (1), and in prediction its float32 copy in [0, 1], the mirror-padded float32 copy and the
# float32 probability map (3 x 4): 15 bytes for an 8-bit slice, 17 for a 16-bit one. On top, the network's
# working memory on the part of the slice it sees at once (the whole slice, or a 2048x2048 window of a
# larger one: stitch.FULL_PASS_PIXELS): about NETWORK_BYTES a pixel of it. A 20000x20000 8-bit slice with
# the U-Net F = 16 peaked at 8.5 GiB on a 2-core CPU (docs/segmenting.md); this model says 9.6.
FLOAT_BYTES = 12
NETWORK_BYTES, NETWORK_PIXELS = 1024, 2048 * 2048


def bytes_per_pixel(mode):
    """Peak bytes per pixel of a slice whose file page has Pillow mode `mode` (FLOAT_BYTES above)."""
    page = 1 if mode in ("1", "L", "P") else 2 if mode.startswith("I;16") else 4
    return 2 * page + 1 + FLOAT_BYTES


def available_memory():
    """Bytes of memory available without swapping (MemAvailable of /proc/meminfo), or None where unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_memory(name, size, mode):
    """Refuse, before decoding, a page of `size` (W, H as Pillow gives it) that would not fit in memory."""
    width, height = size
    need, available = memory_needed(width * height, mode), available_memory()
    if available is not None and need > available:
        raise DataError(f"{name}: a slice of {size_text((height, width))} ({width * height:,} pixels) needs "
                        f"about {need / 2**30:.1f} GiB of memory to read and predict "
                        f"({bytes_per_pixel(mode)} bytes per pixel, and the network's working memory), but "
                        f"{available / 2**30:.1f} GiB are available; crop it into smaller slices or free "
                        "memory")


def memory_needed(pixels, mode):
    """Peak bytes of reading and predicting a slice of `pixels` pixels whose page has Pillow mode `mode`."""
    return pixels * bytes_per_pixel(mode) + min(pixels, NETWORK_PIXELS) * NETWORK_BYTES


@contextlib.contextmanager
def opened(path):
    """Pillow's image of `path`, without its decompression-bomb limit for the length of our read only; a file
    Pillow cannot read raises DataError."""
    limit = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # check_memory is our limit
    try:
        with Image.open(path) as im:
            yield im
    except (OSError, ValueError, SyntaxError, EOFError) as e:  # includes UnidentifiedImageError
        raise DataError(f"{path}: cannot read this file as an image ({' '.join(str(e).split())}); "
                        "replace or remove the corrupt file") from e
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def new_note():
    """What reading a folder tells the data report: modes, conversions, and for masks their values."""
    return {"modes": set(), "converted": set(), "scales": set(), "values": Counter(), "pairs": [0, 0]}


def read_pages(path, is_mask, note):
    """Every page of one file as it is stored -> list of raw pages, for `to_uint8` (images: (H, W) uint8,
    or the integers of a 16-bit or 32-bit page) or `to_binary` (masks: (values, full scale))."""
    for key, empty in new_note().items():
        note.setdefault(key, empty)
    pages = []
    with opened(path) as im:
        n = getattr(im, "n_frames", 1)
        for k in range(n):
            im.seek(k)
            name = path if n == 1 else f"{path} (page {k + 1})"
            check_memory(name, im.size, im.mode)
            note["modes"].add(im.mode)
            pages.append(_mask_page(im, note) if is_mask else _image_page(im, name, note))
    return pages


# ---------------------------------------------------------------- intensities (§4.3.1)

QUANTILES = (0.0001, 0.9999)  # the range a deeper data set's content uses: 0.01% to 99.99% of its pixels


def _image_page(page, name, note):
    """One Pillow page -> (H, W) uint8, or (H, W) uint16 / int32 raw values of a deeper page."""
    mode = page.mode
    if mode == "L":
        return np.asarray(page, dtype=np.uint8)                 # (H, W) uint8 in [0, 255]
    if mode == "1":
        note["converted"].add("1-bit images scaled to 0/255")
        return np.asarray(page, dtype=np.uint8) * 255
    if mode == "F":
        raise DataError(f"{name}: floating-point image; save it as 8-bit or 16-bit grey")
    if mode.startswith("I"):
        raw = np.asarray(page)                                  # (H, W) uint16 or int32, any byte order
        return raw.astype(np.uint16 if mode.startswith("I;16") else np.int32)
    note["converted"].add(f"{mode} images converted to grey (luminance)")
    return np.asarray(page.convert("L"), dtype=np.uint8)     # ITU-R 601-2 luma, alpha dropped


def _histogram(pages):
    """(sorted values, pixels holding each) over integer pages."""
    parts = []
    for raw in pages:
        if raw.dtype == np.uint16:
            counts = np.bincount(raw.ravel(), minlength=65536)
            parts.append((np.flatnonzero(counts), counts[counts > 0]))
        else:
            parts.append(np.unique(raw, return_counts=True))
    values, inverse = np.unique(np.concatenate([v for v, _ in parts]), return_inverse=True)
    return values, np.bincount(inverse, weights=np.concatenate([c for _, c in parts])).astype(np.int64)


def intensity_range(values, counts):
    """(low, high) as ints: the QUANTILES of the pixels, the smallest value at or below which that share
    of the pixels lies; high is at least low + 1, so the map is defined on a constant image too."""
    cumulative = np.cumsum(counts)
    low, high = (int(values[np.searchsorted(cumulative, q * cumulative[-1])]) for q in QUANTILES)
    return low, max(high, low + 1)


def apply_intensity(raw, intensity):
    """(H, W) raw values -> (H, W) uint8: (low, high) mapped linearly onto 0..255, rounded half up,
    clipped."""
    low, high = intensity
    x = raw.astype(np.float64)                                  # (H, W) float64, in place below
    x -= low
    x *= 255.0 / (high - low)
    x += 0.5
    np.floor(x, out=x)
    return np.clip(x, 0, 255, out=x).astype(np.uint8)          # (H, W) uint8 in [0, 255]


def to_uint8(pages, names, note, intensity=None):
    """Raw image pages (`read_pages`) of one split or folder -> (H, W) uint8 each.

    Deeper pages go through one linear map: `intensity` (low, high) when given, else the one their own
    pixels give (`intensity_range`), or none when every value lies in 0..255. note["intensity"] records
    the map used (None: values kept). 8-bit pages beside deeper ones that need a map are refused, and so
    are 8-bit pages read with a map.
    """
    deep = [k for k, page in enumerate(pages) if page.dtype != np.uint8]
    shallow = [k for k, page in enumerate(pages) if page.dtype == np.uint8]
    note["intensity"], found = None, intensity is None
    if deep and intensity is None:
        values, counts = _histogram([pages[k] for k in deep])
        if values[0] >= 0 and values[-1] <= 255:
            note["converted"].add(f"{_deep_modes(note)} images whose values all lie in 0..255 (8-bit images "
                                  "saved deeper): values kept as they are")
            return [page.astype(np.uint8) for page in pages]
        if shallow:
            raise DataError(f"{names[deep[0]]}: a {_deep_modes(note)} image among 8-bit ones "
                            f"({names[shallow[0]]}); save every slice of a data set with one bit depth")
        intensity = intensity_range(values, counts)
    elif shallow and intensity is not None:
        raise DataError(f"{names[shallow[0]]}: an 8-bit image read with a map for deeper images "
                        f"({intensity[0]:g}..{intensity[1]:g} onto 0..255, from the training slices); save "
                        "the slices with the bit depth of the training slices")
    if not deep:
        return pages
    low, high = intensity
    if not low < high:
        raise ValueError(f"intensity must be (low, high) with low < high, got {intensity}")
    outside = sum(int(np.count_nonzero((pages[k] < low) | (pages[k] > high))) for k in deep)
    share = 100 * outside / sum(pages[k].size for k in deep)
    how = (f"values {low}..{high} used ({100 * QUANTILES[0]:g}%-{100 * QUANTILES[1]:g}% of the pixels)"
           if found else f"values {low:g}..{high:g} (the map given)")
    note["converted"].add(f"{_deep_modes(note)} images, {how}, mapped linearly to 0..255 for the whole "
                          f"data set ({share:.2f}% of the pixels outside, clipped)")
    note["intensity"] = (low, high)
    return [apply_intensity(page, intensity) for page in pages]


def _deep_modes(note):
    return "/".join(sorted({MODES.get(m, m).replace(" grey", "") for m in note["modes"]
                            if m.startswith("I")}))


# ---------------------------------------------------------------- masks (§4.1)

def _mask_page(page, note):
    """One Pillow page of a mask -> (raw values (H, W), full scale: 1 for values up to 1, as 0/1 and 1-bit
    masks hold, else 255 or 65535). Colour masks: the brightest of R, G, B, never alpha."""
    raw = np.asarray(page)                                      # (H, W) or (H, W, C), any dtype
    if raw.ndim == 3:
        note["converted"].add(f"{page.mode} masks read from their colour channels, not alpha")
        raw = raw[..., :3].max(axis=-1) if raw.shape[-1] >= 3 else raw[..., 0]  # alpha is no label
    if raw.dtype == bool:
        raw = raw.astype(np.uint8)
    top = raw.max() if raw.size else 0
    scale = 1 if top <= 1 else 255 if top <= 255 else 65535
    note["values"].update({(v, scale): c for v, c in _value_counts(raw).items()})
    note["scales"].add(scale)
    both = (raw[:, :-1] != 0) & (raw[:, 1:] != 0)              # (H, W - 1) bool: neighbours in a row
    note["pairs"][0] += int(np.count_nonzero(both & (raw[:, :-1] == raw[:, 1:])))
    note["pairs"][1] += int(np.count_nonzero(both))
    return raw, scale


def _value_counts(raw):
    """{value: pixels} of a mask page, fast for 8-bit and 16-bit ones."""
    if raw.dtype in (np.uint8, np.uint16):
        counts = np.bincount(raw.ravel(), minlength=256)
        return {int(v): int(counts[v]) for v in np.flatnonzero(counts)}
    values, counts = np.unique(raw, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def _ids(values):
    """{non-zero value: pixels}, every page's full-scale value counted as one ("full scale")."""
    held = Counter()
    for (value, scale), pixels in values.items():
        if value != 0:
            held["full scale" if value == scale else value] += pixels
    return held


def is_label_image(values, pairs):
    """Whether a mask folder is a label image, one integer id per object. values: {(value, full scale):
    pixels} over all its pages; pairs: (equal, all) pairs of non-zero neighbours in a row.

    Four signs, all needed: at least 3 non-zero values (every page's full scale counted as one, so
    Kasthuri++'s 0/2/255 is no label image); none on half of the non-zero pixels or more (the full scale of
    an anti-aliased 0/255 mask holds nearly all); the third largest on at least a tenth of the largest's
    pixels (objects, not the few edge pixels of anti-aliasing beside two large levels); and constant within
    objects, at least 4 of 5 neighbouring pairs equal (a soft or probability mask changes pixel to pixel).
    Integer values only. A class map (1 mitochondria, 2 membranes ...) looks the same: keep one class a mask.
    """
    held = _ids(values)
    top = sorted(held.values(), reverse=True)
    equal, total = pairs
    return (len(top) >= 3 and 2 * top[0] < sum(top) and 10 * top[2] >= top[0] and 5 * equal >= 4 * total
            and all(float(v).is_integer() for v in held if v != "full scale"))


def to_binary(pages, note):
    """Raw mask pages (`read_pages`) -> (H, W) uint8 in {0, 1} each, by the folder's rule: note["rule"] is
    "labels" (every non-zero id is foreground) or "levels" (at least half the page's full scale)."""
    labels = is_label_image(note["values"], note["pairs"])
    note["rule"] = "labels" if labels else "levels"
    return [((raw != 0) if labels else (raw >= (scale + 1) / 2)).astype(np.uint8) for raw, scale in pages]


def mask_rule(values, rule="levels"):
    """A line naming the mask values besides the two levels (0 and the full scale) and the rule applied to
    them, or None when there are none. values: {(value, full scale): pixels}; rule: see to_binary."""
    extra = sorted((v, s) for v, s in values if v not in (0, s))
    if rule == "labels":
        ids = sorted(v for v in _ids(values) if v != "full scale")
        shown = f"{ids[0]:g}..{ids[-1]:g}" if ids else ""
        return (f"masks hold {len(_ids(values))} ids ({shown}), none on half the non-zero pixels, each "
                "constant within its objects: read as a label image, every non-zero id is foreground")
    if not extra:
        return None
    scale = max(s for _, s in values)
    shown = ", ".join(f"{v:g}" for v, _ in extra[:6]) + (" ..." if len(extra) > 6 else "")
    cut = {1: "0.5 of 1", 255: "128 of 255", 65535: "32768 of 65535"}[scale]
    below = [(v, s) for v, s in extra if v * 2 < s]
    low = "none is background"
    if below:
        named = (", ".join(f"{v:g}" for v, _ in below) if len(below) <= 3
                 else f"the {len(below)} values below half")
        low = (f"{named} ({sum(values[b] for b in below)} pixels) {'is' if len(below) == 1 else 'are'} "
               "background")
    return (f"masks hold {len(extra)} value{'s' if len(extra) > 1 else ''} besides 0 and {scale} "
            f"({shown}) on {sum(values[e] for e in extra)} pixels; a pixel is foreground when it is at "
            f"least half the full scale (>= {cut}), so {low}")


def mask_summary(note):
    """The data report's words on a folder's mask values (`new_note`) and the rule applied to them."""
    values = note["values"]
    if note.get("rule") == "labels":
        return mask_rule(values, "labels")
    total = sum(values.values())
    at_zero = 100 * sum(c for (v, _), c in values.items() if v == 0) / total
    at_top = 100 * sum(c for (v, scale), c in values.items() if v == scale) / total
    scales = "/".join(str(scale) for scale in sorted(note["scales"]))
    rule = mask_rule(values)
    return (f"values 0 ({at_zero:.2f}%) and {scales} ({at_top:.2f}%)"
            + (f"; {rule}" if rule else ", the upper one foreground"))


def warn_about(folder, note):
    """The notes of one folder as warnings: conversions, and mask values besides the two levels."""
    rule = mask_rule(note.get("values", {}), note.get("rule", "levels"))
    for line in sorted(note.get("converted", ())) + [rule]:
        if line:
            warnings.warn(f"{folder}: {line}", stacklevel=3)


# ---------------------------------------------------------------- files: their order, slice numbers, pages

def natural_key(name):
    """Sort key that reads runs of digits as numbers, so 'mask2.png' < 'mask10.png' (ties: by name)."""
    parts = re.split(r"(\d+)", name)
    return tuple(int(p) if i % 2 else p for i, p in enumerate(parts)), name


def slice_numbers(names):
    """The slice number each file name carries (its runs of digits, extension excluded), or None.

    When every name of the folder carries as many numbers, it is the last one that changes from file to
    file (a date or a '_v2' all names share is not it); a lone file's is its last number. Names with
    different counts of numbers, or none, get None: no slice number is trusted.
    """
    numbers = [[int(d) for d in re.findall(r"\d+", os.path.splitext(os.path.basename(n))[0])] for n in names]
    counts = {len(ns) for ns in numbers}
    if len(counts) != 1 or counts == {0}:
        return [None] * len(names)
    varying = [k for k in range(len(numbers[0])) if len({ns[k] for ns in numbers}) > 1]
    position = varying[-1] if varying else -1
    return [ns[position] for ns in numbers]


def page_names(path, n):
    """One name per page of a file: the file, or "file (page k)" in a stack."""
    return [path] if n == 1 else [f"{path} (page {k + 1})" for k in range(n)]


def read_files(paths, is_mask=False, notes=None, intensity=None):
    """Every page of every file -> list of (path, list of (H, W) uint8 pages); a TIFF stack is one entry.

    Images: 8-bit grey, or converted (colour to luminance, 1-bit to 0/255, 16-bit and 32-bit integers by
    one linear map for all the files: `intensity` (low, high) when given, as a run records it, else their
    own range; to_uint8). Masks in {0, 1}, by the rule the values of all the files call for (to_binary).
    `notes` (a dict) gathers what the data report tells (new_note, and "intensity": the map used, None
    when values were kept); without it, conversions warn.
    """
    note = new_note() if notes is None else notes
    raw = [(path, read_pages(path, is_mask, note)) for path in paths]
    pages = [page for _, file_pages in raw for page in file_pages]
    names = [name for path, file_pages in raw for name in page_names(path, len(file_pages))]
    pages = to_binary(pages, note) if is_mask else to_uint8(pages, names, note, intensity)
    files, start = [], 0
    for path, file_pages in raw:
        files.append((path, pages[start:start + len(file_pages)]))
        start += len(file_pages)
    if notes is None and paths:
        warn_about(os.path.dirname(paths[0]), note)
    return files
