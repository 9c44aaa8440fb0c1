"""Full-slice inference: overlap-tile stitching for the transformers, one pass for the CNNs.

Thesis: §4.2 (Evaluation), Fig. 4.2 (H, W divisible by 128), Fig. 4.3 (any H, W), Fig. 4.4 (zero
vs mirror padding). The idea is U-Net's overlap-tile strategy (Ronneberger et al., 2015).

UNETR-2D and YNETR-2D only take 256x256 inputs, so a slice is cut into 256x256 windows at stride
128 and only the central 128x128 "relevant patch" of each window is kept: every kept pixel saw
context around it, which removed the seam errors of non-overlapping tiles (§4.2). The U-Net family
is fully convolutional and predicts the whole slice in one pass (`predict_full`), up to 2048 x 2048
pixels; a larger slice (a montage, which one pass would need tens of GB for) goes by overlapping
2048-px windows of the same padded slice, each kept 128 px inside its borders. That is more than the
U-Net's receptive field (94 px from a pixel), and the windows start on the 16-px grid of its poolings,
so every kept pixel sees what it saw in one pass: the maps agree to float rounding.

Mirror padding is NumPy 'symmetric' (the edge pixel is repeated), as `mirror_border` in the thesis
code; zero padding hurt the transformers badly (§4.2, Fig. 4.4). Differences from the thesis code,
none visible on Lucchi++ or Kasthuri++: each axis picks its case on its own (the code takes case 2
only when both H and W are non-multiples of 128); the kept crop is exact for an odd vertical
padding (the code's is then one row off); images smaller than a window work.

Legend: H x W image, n windows in a batch; boxes are (top, left, bottom, right), half-open.
"""
from typing import Callable, NamedTuple

import numpy as np
import torch
from torch import nn

from data import pad_to_multiple, padding_for

# The CNNs' one pass, and the windows of a larger slice (not in the thesis; its slices are 2.4 Mpx at most).
FULL_PASS_PIXELS = 2048 * 2048
CNN_WINDOW, CNN_MARGIN = 2048, 128
# §4.2: 256x256 windows (the transformers' input), 128x128 relevant patches, 64 px context each side.
WINDOW = 256
KEEP = 128


class Tile(NamedTuple):
    window: tuple  # (top, left, bottom, right) of the window in padded coordinates
    kept: tuple  # (top, left, bottom, right) of its relevant patch in image coordinates
    offset: tuple  # (row, col) of the relevant patch inside the window


def _axis_layout(size: int, window: int, keep: int):
    """One axis: (pad_before, pad_after) and per window (window start, kept start, kept end).

    With margin m = (window - keep) / 2 and n windows at stride `keep`, the padded axis is
    (n - 1) * keep + window = n * keep + 2m long and the central parts cover [m, m + n * keep)
    of it. Take n = floor(size / keep) (at least 1). For size >= keep and window = 2 * keep (the
    thesis) the padding 2m - size % keep is then 2m (64 + 64, Fig. 4.2) for a multiple of 128 and
    the least possible (Fig. 4.3) otherwise, and the central parts lie inside the image. The first
    and last kept parts grow outward to the image border; between them each kept part is exactly
    the window centre.
    """
    margin = (window - keep) // 2  # m
    n = max(1, size // keep)
    if n * keep + 2 * margin < size:  # only when keep > window / 2: one more window to reach the end
        n += 1
    pad = n * keep + 2 * margin - size
    pad_before = pad - pad // 2  # the odd pixel goes on top/left, as `mirror_border` in the thesis code
    spans = []
    for k in range(n):
        start = 0 if k == 0 else margin + k * keep - pad_before
        end = size if k == n - 1 else margin + (k + 1) * keep - pad_before
        spans.append((k * keep, start, end))
    return (pad_before, pad // 2), spans


def tile_layout(H: int, W: int, window: int = WINDOW, keep: int = KEEP):
    """The overlap-tile layout of §4.2 for an H x W image: (tiles, padding).

    `padding` is ((top, bottom), (left, right)), ready for np.pad; `tiles` lists a `Tile` per
    window in row-major order. One axis, two cases (thesis numbers; p = mirror padding, I = image,
    '.' = context only, '#' = window centre, digits = which window each output pixel comes from):

      Case 1, H = 384 (Fig. 4.2): pad 64 + 64, H / 128 = 3 windows; 1 char = 16 px
        padded   ppppIIIIIIIIIIIIIIIIIIIIIIIIpppp
        window 0 ....########....
        window 1         ....########....
        window 2                 ....########....
        output       000000001111111122222222

      Case 2, H = 320 (Fig. 4.3): pad 32 + 32 = 384 - 320, floor(320 / 128) = 2 windows; 1 char = 8 px
        padded   ppppIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIIpppp
        window 0 ........################........
        window 1                 ........################........
        output       0000000000000000000011111111111111111111

    With two or more windows, a case 2 border relevant patch is H_R2 = 64 + 128 - (padding on its
    side) tall (Fig. 4.3): it reaches the image border and holds no padding pixel. Below 256 px an
    axis has one window that keeps all of it; below 128 px its padding exceeds 64 a side and, when
    a side needs more than the image has, the mirroring repeats (np.pad does so itself).
    """
    assert 0 < keep <= window and (window - keep) % 2 == 0, (f"need 0 < keep <= window, even margins: "
                                                             f"{window=}, {keep=}")
    assert H >= 1 and W >= 1, f"empty image {H}x{W}"
    pad_rows, rows = _axis_layout(H, window, keep)
    pad_cols, cols = _axis_layout(W, window, keep)
    tiles = []
    for win_top, top, bottom in rows:
        for win_left, left, right in cols:
            tiles.append(Tile(window=(win_top, win_left, win_top + window, win_left + window),
                              kept=(top, left, bottom, right),
                              offset=(top + pad_rows[0] - win_top, left + pad_cols[0] - win_left)))
    return tiles, (pad_rows, pad_cols)


def predict_tiled(predict_fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray,
                  window: int = WINDOW, keep: int = KEEP, batch_size: int = 8) -> np.ndarray:
    """Probability map of an (H, W) image from a model that only takes window x window inputs.

    predict_fn maps an (n, window, window) float32 batch to probabilities of the same shape; the
    windows go through it `batch_size` at a time. Returns (H, W) float32; every pixel is copied
    from exactly one window (`tile_layout`).
    """
    assert image.ndim == 2, f"expected an (H, W) image, got shape {image.shape}"
    assert batch_size >= 1, f"batch_size must be positive, got {batch_size}"
    H, W = image.shape
    tiles, padding = tile_layout(H, W, window, keep)
    # np.pad repeats the mirroring when a side needs more than the image has (tiny images)
    padded = np.pad(image.astype(np.float32, copy=False), padding,
                    mode="symmetric")  # (H + pads, W + pads) float32
    out = np.full((H, W), np.nan, dtype=np.float32)  # (H, W) float32, NaN until written
    for first in range(0, len(tiles), batch_size):
        chunk = tiles[first:first + batch_size]
        batch = np.stack([padded[t:b, l:r] for (t, l, b, r), _, _ in chunk])  # (n, window, window) float32
        probs = np.asarray(predict_fn(batch), dtype=np.float32)  # (n, window, window) float32 in [0, 1]
        assert probs.shape == batch.shape, f"predict_fn returned {probs.shape} for input {batch.shape}"
        for prob, tile in zip(probs, chunk):
            top, left, bottom, right = tile.kept
            dy, dx = tile.offset
            out[top:bottom, left:right] = prob[dy:dy + bottom - top, dx:dx + right - left]
    return out


def _probabilities(model: nn.Module, batch: np.ndarray, device=None) -> np.ndarray:
    """Sigmoid of the model's logits for an (n, H, W) float32 batch, as (n, H, W) float32."""
    param = next(model.parameters(), None)
    if device is None:
        device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    x = torch.from_numpy(np.ascontiguousarray(batch))[:, None]  # (B, 1, H, W) on the host
    if torch.device(device).type == "cuda":
        x = x.pin_memory()  # page-locked host memory: the copy to the GPU does not block
    x = x.to(device=device, dtype=dtype, non_blocking=True)  # (B, 1, H, W)
    with torch.no_grad():
        logits = model(x)  # (B, 1, H, W), or a tuple starting with it
        # Attention Y-Net returns (segmentation, reconstruction), App. A
        if isinstance(logits, (tuple, list)):
            logits = logits[0]  # (B, 1, H, W)
        assert logits.shape == x.shape, f"model returned {tuple(logits.shape)} for input {tuple(x.shape)}"
        probs = torch.sigmoid(logits)  # (B, 1, H, W) in [0, 1]
    return probs[:, 0].to(device="cpu", dtype=torch.float32).numpy()  # (n, H, W) float32 in [0, 1]


def model_predict_fn(model: nn.Module, device=None) -> Callable[[np.ndarray], np.ndarray]:
    """A predict_fn for `predict_tiled`: (n, window, window) float32 -> sigmoid probabilities.

    Runs under torch.no_grad() in whatever mode (train/eval) the caller left the model.
    """
    return lambda batch: _probabilities(model, batch, device)


def predict_full(model: nn.Module, image: np.ndarray, multiple: int = 16, device=None,
                 max_pixels: int = None, window: int = None, margin: int = None) -> np.ndarray:
    """Probability map of an (H, W) float32 image in [0, 1] from a fully convolutional model.

    Mirror-pads to a multiple of `multiple` as the training slices are (`data.pad_to_multiple`;
    2^4 for the four 2x2 poolings of the U-Net, Fig. 2.1), runs one forward pass and crops back; a
    padded slice of more than `max_pixels` goes by `window`-px windows of it (`cnn_windows`; None: the
    module's FULL_PASS_PIXELS, CNN_WINDOW, CNN_MARGIN). Returns (H, W) float32 in [0, 1].
    """
    max_pixels, window, margin = (max_pixels or FULL_PASS_PIXELS, window or CNN_WINDOW,
                                  CNN_MARGIN if margin is None else margin)
    assert image.ndim == 2, f"expected an (H, W) image, got shape {image.shape}"
    assert (window - 2 * margin) % multiple == 0, "windows must start on the poolings' grid"
    H, W = image.shape
    (top, _), (left, _) = padding_for(H, multiple), padding_for(W, multiple)
    padded = pad_to_multiple(image.astype(np.float32, copy=False), multiple)  # (H', W') float32, multiples
    if padded.size <= max_pixels:
        probs = _probabilities(model, padded[None], device)[0]  # (H', W') float32 in [0, 1]
    else:
        probs = np.empty(padded.shape, np.float32)  # (H', W') float32, every pixel from one window
        for r0, r1, keep_top, keep_bottom in cnn_windows(padded.shape[0], window, margin):
            for c0, c1, keep_left, keep_right in cnn_windows(padded.shape[1], window, margin):
                part = _probabilities(model, padded[None, r0:r1, c0:c1], device)[0]  # (r1-r0, c1-c0)
                probs[keep_top:keep_bottom, keep_left:keep_right] = \
                    part[keep_top - r0:keep_bottom - r0, keep_left - c0:keep_right - c0]
    return np.ascontiguousarray(probs[top:top + H, left:left + W])  # (H, W) float32 in [0, 1]


def cnn_windows(size: int, window: int = CNN_WINDOW, margin: int = CNN_MARGIN):
    """One axis of a padded slice of `size` px cut into windows of at most `window` px at stride
    window - 2 * margin: (start, end, kept start, kept end) each. A window keeps what lies `margin` px
    inside its inner borders; at the slice's own border it keeps up to it, as one pass sees it there."""
    assert window > 2 * margin >= 0, f"need window > 2 * margin, got {window=}, {margin=}"
    spans, start = [], 0
    while True:
        end = min(start + window, size)
        spans.append((start, end, 0 if start == 0 else start + margin, size if end == size else end - margin))
        if end == size:
            return spans
        start += window - 2 * margin
