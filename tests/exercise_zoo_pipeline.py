"""The zoo, exercises 7-12 (padding, tiles, metrics, degradations, histogram matching, losses): plausible
wrong bodies, by family, and correct bodies written differently from the project's."""
from exercise_kit import Body

NOISE, CUT, MATCH, LOSS = "gaussian_noise", "cutout", "match_histogram", "compute_loss"


def cutout(count="rng.integers(n_min, n_max + 1)", size="max(1, round(size * H)), max(1, round(size * W))",
           corner="int(np.floor(cy * H - h / 2)), int(np.floor(cx * W - w / 2))", out="image.copy()",
           box="out[max(top, 0):top + h, max(left, 0):left + w] = fill"):
    """cutout with one of its expressions replaced."""
    return f"""
        H, W = image.shape
        h, w = {size}
        out = {out}
        for _ in range({count}):
            cy, cx = rng.random(2)
            top, left = {corner}
            {box}
        return out"""


def axis(n="max(1, size // keep)", margin="(window - keep) // 2", before="pad - pad // 2"):
    """_axis_layout with one of its expressions replaced."""
    return f"""
        margin = {margin}
        n = {n}
        if n * keep + 2 * margin < size:
            n += 1
        pad = n * keep + 2 * margin - size
        pad_before = {before}
        spans = []
        for k in range(n):
            start = 0 if k == 0 else margin + k * keep - pad_before
            end = size if k == n - 1 else margin + (k + 1) * keep - pad_before
            spans.append((k * keep, start, end))
        return (pad_before, pad - pad_before), spans"""


def match_body(zero_count, keep_zero="fix_zero_peak and counts[0] > 0", pin_zero=True,
               lookup="np.interp(source_cdf, np.cumsum(target[levels]) / target.sum(), levels)",
               rounded="_to_uint8(lut)"):
    """match_histogram with `zero_count` as the fix's new count of 0 (an expression of counts)."""
    return f"""
        counts = np.bincount(image.ravel(), minlength=256).astype(np.float64)
        keep_zero = {keep_zero}
        if keep_zero:
            counts[0] = {zero_count}
        source_cdf = np.cumsum(counts) / counts.sum()
        target = np.asarray(target_hist, dtype=np.float64)
        levels = np.nonzero(target)[0]
        lut = {lookup}
        if keep_zero and {pin_zero}:
            lut[0] = 0.0
        return {rounded}[image]"""


def loss_body(ynet="alpha * F.mse_loss(rec, x) + (1 - alpha) * (bce * labelled).mean()",
              ynet_pretext="F.mse_loss(rec, y)", bce="F.binary_cross_entropy_with_logits(output, y)",
              segmentation='bce + dice_loss(output, y) if loss == "bce_dice" else bce',
              labelled="(y.flatten(1)[:, 0] >= 0).to(seg.dtype)"):
    """compute_loss with one of its expressions replaced."""
    return f"""
        if isinstance(output, tuple):
            seg, rec = output
            if pretext:
                return {ynet_pretext}
            labelled = {labelled}
            bce = F.binary_cross_entropy_with_logits(seg, y.clamp(min=0), reduction="none")
            bce = bce.mean(dim=(1, 2, 3))
            return {ynet}
        if pretext:
            return F.mse_loss(torch.sigmoid(output), y)
        bce = {bce}
        return {segmentation}"""


RULE = "(max(0.0, 2 * counts[1] - counts[2]) if counts[1] > 0 and counts[2] > 0 " \
       "else float(not counts[1:].any()))"
PAD = "[(0, 0)] * (image.ndim - 2) + [padding_for(n, multiple) for n in image.shape[-2:]]"

WRONG = [
    # ----- 7. mirror padding
    Body(7, "'reflect' instead of 'symmetric' padding", {"pad_to_multiple": f"""
        return np.pad(image, {PAD}, mode="reflect")"""},
         family="logic", fails=("pad_to_multiple mirrors",), where=("a 2x2 int64 slice, multiple=5",)),
    Body(7, "the odd pixel after", {"padding_for": """
        total = -size % multiple
        return total // 2, (total + 1) // 2"""},
         family="logic", fails=("padding_for",), where=("size=1, multiple=2",)),
    Body(7, "a whole multiple of padding when none is needed", {"padding_for": """
        total = multiple - size % multiple
        return (total + 1) // 2, total // 2"""},
         family="logic", fails=("padding_for", "a slice whose sides are already multiples"),
         where=("size=1, multiple=1",)),
    Body(7, "leading axes padded too", {"pad_to_multiple": """
        return np.pad(image, [padding_for(n, multiple) for n in image.shape], mode="symmetric")"""},
         family="shape", fails=("leading axes stay as they are",),
         where=("a uint8 stack of shape (3, 5, 7)",)),
    Body(7, "a multiple of 256 assumed", {"padding_for": """
        total = -size % 256
        return (total + 1) // 2, total // 2"""},
         family="value", fails=("padding_for",), where=("size=1, multiple=1",)),
    Body(7, "padded as float32", {"pad_to_multiple": f"""
        return np.pad(image.astype(np.float32), {PAD}, mode="symmetric")"""},
         family="precision", fails=("pad_to_multiple mirrors", "leading axes stay"),
         where=("a 2x2 int64 slice, multiple=5",),
         says=("expected the input's int64",)),
    Body(7, "stacks (n, H, W) assumed", {"pad_to_multiple": """
        (top, bottom), (left, right) = (padding_for(n, multiple) for n in image.shape[-2:])
        return np.pad(image, ((0, 0), (top, bottom), (left, right)), mode="symmetric")"""},
         family="shape", fails=("pad_to_multiple mirrors",), where=("a 2x2 int64 slice, multiple=5",)),
    Body(7, "the mirror cut out once, by slicing", {"pad_to_multiple": """
        (t, b), (l, r) = (padding_for(n, multiple) for n in image.shape[-2:])
        H, W = image.shape[-2:]
        top, bottom = image[..., :t, :][..., ::-1, :], image[..., H - b:, :][..., ::-1, :]
        rows = np.concatenate([top, image, bottom], -2)
        return np.concatenate([rows[..., :l][..., ::-1], rows, rows[..., W - r:][..., ::-1]], -1)"""},
         family="shape", fails=("padding wider than the slice",), where=("a 1x3 float32 slice, multiple=6",),
         passes=("pad_to_multiple mirrors",)),
    # ----- 8. overlap-tile layout
    Body(8, "ceil(size / keep) windows: more padding than needed",
         {"_axis_layout": axis(n="max(1, -(-size // keep))")},
         family="logic", fails=("the padding:",), where=("a 1x1613 slice, window=256, keep=128",)),
    Body(8, "the odd padding pixel at the bottom", {"_axis_layout": axis(before="pad // 2")},
         family="logic", fails=("the padding:",), where=("a 1x1613 slice",)),
    Body(8, "border patches not grown to the image border", {"_axis_layout": """
        margin = (window - keep) // 2
        n = max(1, size // keep)
        if n * keep + 2 * margin < size:
            n += 1
        pad = n * keep + 2 * margin - size
        pad_before = pad - pad // 2
        starts = [margin + k * keep - pad_before for k in range(n)]
        spans = [(k * keep, max(0, start), min(size, start + keep)) for k, start in enumerate(starts)]
        return (pad_before, pad // 2), spans"""},
         family="logic", fails=("the kept parts are the 128 x 128 window centres",),
         where=("a 1x1613 slice",)),
    Body(8, "window and keep fixed at 256 and 128", {"_axis_layout": axis(
        n="max(1, size // 128)", margin="64").replace("keep", "128")},
         family="value", fails=("other windows and kept parts",), where=("window=64, keep=32",),
         passes=("the padding:", "the windows:")),
    Body(8, "no window for a side shorter than keep", {"_axis_layout": axis(n="size // keep")},
         family="shape", fails=("the padding:", "the windows:"), where=("a 1x1613 slice",)),
    Body(8, "tiles in column-major order", {"tile_layout": """
        pad_rows, rows = _axis_layout(H, window, keep)
        pad_cols, cols = _axis_layout(W, window, keep)
        tiles = [Tile(window=(wt, wl, wt + window, wl + window), kept=(t, l, b, r),
                      offset=(t + pad_rows[0] - wt, l + pad_cols[0] - wl))
                 for wl, l, r in cols for wt, t, b in rows]
        return tiles, (pad_rows, pad_cols)"""},
         family="logic", fails=("the windows:",), where=("a 256x333 slice",)),
    Body(8, "offsets measured from the image, not the padded slice", {"tile_layout": """
        pad_rows, rows = _axis_layout(H, window, keep)
        pad_cols, cols = _axis_layout(W, window, keep)
        tiles = [Tile(window=(wt, wl, wt + window, wl + window), kept=(t, l, b, r), offset=(t - wt, l - wl))
                 for wt, t, b in rows for wl, l, r in cols]
        return tiles, (pad_rows, pad_cols)"""},
         family="logic", fails=("the kept parts are the 128 x 128 window centres",),
         where=("a 1x1613 slice",)),
    # ----- 9. IoU_F and Dice
    Body(9, "1.0 whenever TP + FP == 0 (the missed slice scores perfectly)", {
        "iou_from_counts": "return 1.0 if tp + fp == 0 else tp / (tp + fp + fn)",
        "dice_from_counts": "return 1.0 if tp + fp == 0 else 2 * tp / (2 * tp + fp + fn)"},
         family="logic", fails=("the edge cases",), where=("(0, 0, 7)",),
         passes=("IoU_F = TP / (TP + FP + FN) and Dice",)),
    Body(9, "IoU with the true negatives", {"iou_foreground": """
        pred, mask = np.asarray(pred, bool), np.asarray(mask, bool)
        return float((pred & mask).sum() / ((pred | mask).sum() + (~pred & ~mask).sum()))"""},
         family="logic", fails=("from two masks any non-zero pixel",), where=("bool 20x30 masks",)),
    Body(9, "Dice written as IoU",
         {"dice_from_counts": "return 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)"},
         family="logic", fails=("IoU_F = TP / (TP + FP + FN) and Dice",),
         where=("counts (TP, FP, FN) = (1, 0, 1)",)),
    Body(9, "integer division",
         {"iou_from_counts": "return 1.0 if tp + fp + fn == 0 else tp // (tp + fp + fn)"},
         family="precision", fails=("IoU_F = TP / (TP + FP + FN) and Dice",),
         where=("counts (TP, FP, FN) = (1, 0, 1)",)),
    Body(9, "an empty prediction of an empty mask scores 0", {
        "iou_from_counts": "return 0.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)"},
         family="logic", fails=("the edge cases",), where=("(0, 0, 0)",)),
    Body(9, "0/255 masks multiplied as numbers", {"iou_foreground": """
        pred, mask = np.asarray(pred), np.asarray(mask)
        tp = int((pred * mask).sum())
        return iou_from_counts(tp, int(pred.sum()) - tp, int(mask.sum()) - tp)"""},
         family="shape", fails=("from two masks any non-zero pixel",),
         where=("a 0/1 prediction of a 0/255 mask",)),
    Body(9, "fractional masks thresholded at 0.5", {
        "iou_foreground": "return iou_from_counts(*confusion(np.asarray(pred) > .5, np.asarray(mask) > .5))",
        "dice_coefficient": "return dice_from_counts(*confusion(np.asarray(pred) > .5, np.asarray(mask) > .5"
                            "))"},
         family="shape", fails=("from two masks any non-zero pixel",), where=("a fractional prediction",)),
    Body(9, "scores rounded to four decimals", {
        "iou_from_counts": "return 1.0 if tp + fp + fn == 0 else round(tp / (tp + fp + fn), 4)"},
         family="precision", fails=("IoU_F = TP / (TP + FP + FN) and Dice",),
         where=("counts (TP, FP, FN) = (1, 0, 5)",)),
    Body(9, "a NumPy float32 returned", {"iou_from_counts": """
        tp, fp, fn = np.float32(tp), np.float32(fp), np.float32(fn)
        return np.float32(1) if tp + fp + fn == 0 else tp / (tp + fp + fn)"""},
         family="precision", fails=("IoU_F = TP / (TP + FP + FN) and Dice",),
         where=("counts (TP, FP, FN) = (1, 0, 0)",), says=("got float32, expected a Python float",)),
    Body(9, "counts summed in int32", {"dice_from_counts": """
        tp, fp, fn = np.array([tp, fp, fn]).astype(np.int32)
        total = np.int32(2) * tp + fp + fn
        return 1.0 if total == 0 else float(2 * tp / total)"""},
         family="precision", fails=("IoU_F = TP / (TP + FP + FN) and Dice",),
         where=("(2147483648, 1, 1073741824)",)),
    # ----- 10. two pretext degradations
    Body(10, "astype(np.uint8) wraps around", {NOISE: """
        return np.rint(image + rng.normal(0.0, sigma, image.shape)).astype(np.uint8)"""},
         family="precision", fails=("gaussian_noise clips to [0, 255]",), where=("a 256x320 image of 0",)),
    Body(10, "truncation instead of rounding", {NOISE: """
        return np.clip(image + rng.normal(0.0, sigma, image.shape), 0, 255).astype(np.uint8)"""},
         family="precision", fails=("gaussian_noise: N(0, sigma) per pixel",), where=("sigma=1",)),
    Body(10, "n_max left out (rng.integers(n_min, n_max))",
         {CUT: cutout(count="rng.integers(n_min, n_max)")},
         family="value", fails=("cutout: the number of boxes",), where=("n_min=1, n_max=5",)),
    Body(10, "boxes int(size * H) instead of rounded",
         {CUT: cutout(size="max(1, int(size * H)), max(1, int(size * W))")},
         family="logic", fails=("cutout: one box is round(size H)",), where=("a 53x42 image, size=0.2",)),
    Body(10, "boxes kept inside the image",
         {CUT: cutout(corner="rng.integers(0, H - h + 1), rng.integers(0, W - w + 1)",
                      box="out[top:top + h, left:left + w] = fill")},
         family="draws", fails=("cutout: box centres are uniform",), where=("a 40x48 image, size=0.25",)),
    Body(10, "cutout changes its input", {CUT: cutout(out="image")},
         family="logic", fails=("gaussian_noise and cutout are pure",), where=("seeds 107, 107, 108",)),
    Body(10, "boxes placed by their corner",
         {CUT: cutout(corner="int(np.floor(cy * H)), int(np.floor(cx * W))")},
         family="draws", fails=("cutout: box centres are uniform",), where=("a 40x48 image, size=0.25",),
         passes=("cutout: one box is round(size H)",)),
    Body(10, "n_min ignored (from 1)", {CUT: cutout(count="rng.integers(1, n_max + 1)")},
         family="value", fails=("cutout: the number of boxes",), where=("n_min=0, n_max=2",)),
    Body(10, "sigma ignored (always 0.15 * 255)",
         {NOISE: "return _to_uint8(image + rng.normal(0, 38.25, image.shape))"},
         family="value", fails=("gaussian_noise: N(0, sigma) per pixel",), where=("sigma=1",)),
    Body(10, "one noise value per row", {NOISE: """
        return _to_uint8(image + rng.normal(0.0, sigma, (image.shape[0], 1)))"""},
         family="draws", fails=("gaussian_noise: N(0, sigma) per pixel",), where=("sigma=1",),
         says=("along the rows",)),
    Body(10, "the global NumPy generator instead of rng", {NOISE: """
        return _to_uint8(image + np.random.normal(0.0, sigma, image.shape))"""},
         family="draws", fails=("gaussian_noise and cutout are pure",), where=("seeds 107, 107, 108",),
         says=("the same seed",)),
    Body(10, "square boxes of round(size * H)",
         {CUT: cutout(size="max(1, round(size * H)), max(1, round(size * H))")},
         family="shape", fails=("cutout: one box is round(size H)",), where=("a 53x42 image, size=0.2",)),
    # ----- 11. histogram matching
    Body(11, "the line reversed (2 c2 - c1)", {MATCH: match_body(RULE.replace(
        "2 * counts[1] - counts[2]", "2 * counts[2] - counts[1]"))},
         family="logic", fails=("fix_zero_peak on a slice with 0, 1 and 2",), where=("300 1s and 200 2s",),
         says=("grey levels",),
         passes=("without the fix",)),
    Body(11, "count(0) := count(1)",
         {MATCH: match_body(RULE.replace("max(0.0, 2 * counts[1] - counts[2])", "counts[1]"))},
         family="logic", fails=("fix_zero_peak on a slice with 0, 1 and 2",), where=("300 1s and 200 2s",)),
    Body(11, "count(0) := 0 always", {MATCH: match_body("0.0 if counts[1:].any() else 1.0")},
         family="logic", fails=("fix_zero_peak on a slice with 0, 1 and 2",), where=("300 1s and 200 2s",)),
    Body(11, "the regression without its condition", {MATCH: match_body(
        "max(0.0, 2 * counts[1] - counts[2]) if counts[1:].any() else 1.0")},
         family="shape", fails=("fix_zero_peak when 1 or 2 is missing",),
         where=("a dark slice with 0 and 1s but no 2",)),
    Body(11, "a negative count of 0 allowed", {MATCH: match_body(RULE.replace(
        "max(0.0, 2 * counts[1] - counts[2])", "2 * counts[1] - counts[2]"))},
         family="logic", fails=("fix_zero_peak on a slice with 0, 1 and 2",), where=("80 1s and 400 2s",)),
    Body(11, "zero padding not pinned to 0", {MATCH: match_body(RULE, pin_zero=False)},
         family="logic", fails=("fix_zero_peak on a slice with 0, 1 and 2",), where=("300 1s and 200 2s",)),
    Body(11, "the target's CDF over all 256 levels, empty ones too", {MATCH: match_body(
        RULE, lookup="np.interp(source_cdf, np.cumsum(target) / target.sum(), np.arange(256))")},
         family="shape", fails=("without the fix",), where=("a random 64x48 slice holding 0",)),
    Body(11, "the fix applied to slices without 0", {MATCH: match_body(RULE, keep_zero="fix_zero_peak")},
         family="shape", fails=("fix_zero_peak when 1 or 2 is missing",),
         where=("a dark slice with 1s and 2s but no 0",)),
    Body(11, "a target of counts taken as frequencies", {MATCH: match_body(
        RULE, lookup="np.interp(source_cdf, np.cumsum(target[levels]), levels)")},
         family="value", fails=("without the fix",), where=("a target given as counts",)),
    Body(11, "the lookup table truncated instead of rounded",
         {MATCH: match_body(RULE, rounded="lut.astype(np.uint8)")},
         family="precision", fails=("without the fix",), where=("a random 64x48 slice holding 0",)),
    # ----- 12. the training losses
    Body(12, "alpha on the wrong term", {LOSS: loss_body(
        ynet="(1 - alpha) * F.mse_loss(rec, x) + alpha * (bce * labelled).mean()")},
         family="logic", fails=("Attention Y-Net: alpha MSE",), where=("alpha=0.0",)),
    Body(12, "unlabelled samples not masked",
         {LOSS: loss_body(ynet="alpha * F.mse_loss(rec, x) + (1 - alpha) * bce.mean()")},
         family="logic", fails=("Attention Y-Net: an unlabelled sample",),
         where=("sample(s) [1] unlabelled",)),
    Body(12, "BCE averaged over the labelled samples only", {LOSS: loss_body(
        ynet="alpha * F.mse_loss(rec, x) + (1 - alpha) * (bce * labelled).sum() / labelled.sum()")},
         family="logic", fails=("Attention Y-Net: an unlabelled sample",),
         where=("sample(s) [1] unlabelled",)),
    Body(12, "Y-Net pretext against x instead of the clean target",
         {LOSS: loss_body(ynet_pretext="F.mse_loss(rec, x)")},
         family="mode", fails=("Attention Y-Net pretext",), where=("B=3",)),
    Body(12, "bce_dice ignored", {LOSS: loss_body(segmentation="bce")},
         family="value", fails=("bce_dice adds the Dice loss",), where=("loss='bce_dice'",)),
    Body(12, "a sigmoid before the BCE-with-logits", {LOSS: loss_body(
        bce="F.binary_cross_entropy_with_logits(torch.sigmoid(output), y)")},
         family="logic", fails=("segmentation: BCE on the logits",), where=("B=2, 4x5 logits, float64",)),
    Body(12, "BCE on sigmoid probabilities",
         {LOSS: loss_body(bce="F.binary_cross_entropy(torch.sigmoid(output), y)")},
         family="precision", fails=("segmentation: BCE on the logits",), where=("float32 logits of +-30",),
         passes=("bce_dice adds",)),
    Body(12, "BCE on Keras-clipped probabilities", {LOSS: loss_body(
        bce="F.binary_cross_entropy(torch.sigmoid(output).clamp(1e-7, 1 - 1e-7), y)")},
         family="precision", fails=("segmentation: BCE on the logits",), where=("float32 logits of +-30",)),
    Body(12, "alpha fixed at 0.5",
         {LOSS: loss_body(ynet="0.5 * F.mse_loss(rec, x) + 0.5 * (bce * labelled).mean()")},
         family="value", fails=("Attention Y-Net: alpha MSE",), where=("alpha=0.0",)),
    Body(12, "one label test for the whole batch",
         {LOSS: loss_body(labelled="(y.min() >= 0).to(seg.dtype)")},
         family="shape", fails=("Attention Y-Net: an unlabelled sample",),
         where=("sample(s) [1] unlabelled",)),
    Body(12, "the Dice loss per sample, averaged", {LOSS: loss_body(
        segmentation='bce + torch.stack([dice_loss(o, t) for o, t in zip(output, y)]).mean() '
                     'if loss == "bce_dice" else bce')},
         family="shape", fails=("bce_dice adds the Dice loss",), where=("B=2",)),
    Body(12, "the BCE summed over the batch", {LOSS: loss_body(
        ynet="alpha * F.mse_loss(rec, x) + (1 - alpha) * (bce * labelled).sum()")},
         family="shape", fails=("Attention Y-Net: alpha MSE",), where=("alpha=0.0",)),
]

RIGHT = [
    Body(7, "index arithmetic instead of np.pad", {
        "padding_for": """
        total = (multiple - size % multiple) % multiple
        return total - total // 2, total // 2""",
        "pad_to_multiple": """
        out = image
        for axis in (-2, -1):  # d c b a | a b c d has period 2n
            n = out.shape[axis]
            before, after = padding_for(n, multiple)
            index = np.mod(np.arange(-before, n + after), 2 * n)
            out = np.take(out, np.where(index >= n, 2 * n - 1 - index, index), axis=axis)
        return out"""}),
    Body(7, "divmod for the amounts, np.pad once per axis", {
        "padding_for": """
        whole, rest = divmod(size, multiple)
        total = 0 if rest == 0 else (whole + 1) * multiple - size
        return total // 2 + total % 2, total // 2""",
        "pad_to_multiple": """
        for axis in (image.ndim - 2, image.ndim - 1):
            widths = [(0, 0)] * image.ndim
            widths[axis] = padding_for(image.shape[axis], multiple)
            image = np.pad(image, widths, mode="symmetric")
        return image"""}),
    Body(8, "kept parts as the window centres clamped to the image", {"_axis_layout": """
        margin = (window - keep) // 2
        n = max(1, size // keep, -(-(size - 2 * margin) // keep))
        pad = n * keep + 2 * margin - size
        before = (pad + 1) // 2
        spans = []
        for k in range(n):
            lo, hi = k * keep + margin - before, (k + 1) * keep + margin - before
            spans.append((k * keep, lo if k else 0, hi if k < n - 1 else size))
        return (before, pad - before), spans"""}),
    Body(9, "counts of set sizes; Dice from IoU", {
        "iou_from_counts": "return float(tp / (tp + fp + fn)) if tp + fp + fn else 1.0",
        "dice_from_counts": """
        iou = iou_from_counts(tp, fp, fn)
        return float(2 * iou / (1 + iou))""",
        "iou_foreground": """
        pred, mask = np.asarray(pred) != 0, np.asarray(mask) != 0
        union = np.count_nonzero(pred | mask)
        return np.count_nonzero(pred & mask) / union if union else 1.0""",
        "dice_coefficient": """
        pred, mask = np.asarray(pred) != 0, np.asarray(mask) != 0
        total = np.count_nonzero(pred) + np.count_nonzero(mask)
        return 2 * np.count_nonzero(pred & mask) / total if total else 1.0"""}),
    Body(9, "float32 arithmetic", {
        "iou_from_counts": """
        tp, fp, fn = np.float32(tp), np.float32(fp), np.float32(fn)
        return 1.0 if tp + fp + fn == 0 else float(tp / (tp + fp + fn))""",
        "dice_from_counts": """
        tp, fp, fn = np.float32(tp), np.float32(fp), np.float32(fn)
        return 1.0 if tp + fp + fn == 0 else float(2 * tp / (2 * tp + fp + fn))"""}),
    Body(10, "standard normals scaled; boxes from clipped corners", {
        NOISE: """
        noisy = image.astype(np.float64) + sigma * rng.standard_normal(image.shape)
        return np.rint(noisy).clip(0, 255).astype(np.uint8)""",
        CUT: """
        H, W = image.shape
        h, w = max(1, round(size * H)), max(1, round(size * W))
        out = np.array(image)
        n = rng.integers(n_min, n_max, endpoint=True)
        for cy, cx in rng.random((n, 2)) if n else []:
            top, left = int(np.floor(cy * H - h / 2)), int(np.floor(cx * W - w / 2))
            out[np.clip(top, 0, H):np.clip(top + h, 0, H), np.clip(left, 0, W):np.clip(left + w, 0, W)] = fill
        return out"""}),
    Body(10, "whole-pixel box centres; noise by rng.normal(size=...)", {
        NOISE: """
        noisy = np.round(image + rng.normal(scale=sigma, size=image.shape))
        return np.clip(noisy, 0, 255).astype(np.uint8)""",
        CUT: """
        H, W = image.shape
        h, w = max(1, round(size * H)), max(1, round(size * W))
        out = image.copy()
        for _ in range(rng.integers(n_min, n_max + 1)):
            cy, cx = rng.integers(0, H), rng.integers(0, W)  # a pixel, the box's centre
            top, left = cy - h // 2, cx - w // 2
            out[max(top, 0):max(top + h, 0), max(left, 0):max(left + w, 0)] = fill
        return out"""}),
    Body(11, "a lookup table by loops", {MATCH: """
        counts = [0.0] * 256
        for value, count in zip(*np.unique(image, return_counts=True)):
            counts[int(value)] = float(count)
        pinned = fix_zero_peak and counts[0] > 0
        if pinned:
            if counts[1] and counts[2]:
                counts[0] = max(0.0, 2 * counts[1] - counts[2])
            else:
                counts[0] = 0.0 if any(counts[1:]) else 1.0
        total, running, source_cdf = sum(counts), 0.0, []
        for c in counts:
            running += c
            source_cdf.append(running / total)
        target = np.asarray(target_hist, dtype=np.float64)
        levels = np.flatnonzero(target)
        lut = np.interp(source_cdf, np.cumsum(target[levels]) / target.sum(), levels)
        lut = np.clip(np.round(lut), 0, 255).astype(np.uint8)
        if pinned:
            lut[0] = 0
        return lut[image]"""}),
    Body(11, "np.histogram and normalised CDFs in float32", {MATCH: """
        counts = np.histogram(image, bins=256, range=(0, 256))[0].astype(np.float64)
        fix = fix_zero_peak and counts[0] > 0
        if fix:
            black = counts.sum() == counts[0]
            counts[0] = _zero_peak_fix(counts[1], counts[2]) if counts[1] and counts[2] else float(black)
        source = np.cumsum(counts / counts.sum())
        target = np.asarray(target_hist, dtype=np.float64)
        levels = np.flatnonzero(target)
        wanted = np.cumsum(target[levels] / target.sum())
        lut = np.floor(np.interp(source, wanted, levels) + 0.5)
        if fix:
            lut[0] = 0
        return lut.clip(0, 255).astype(np.uint8)[image]"""}),
    Body(12, "log-sigmoid BCE written out", {LOSS: """
        def bce(z, t):  # per sample, from log sigmoid
            terms = -(t * F.logsigmoid(z) + (1 - t) * F.logsigmoid(-z))
            return terms.flatten(1).mean(1)
        if type(output) is tuple:
            seg, rec = output
            if pretext:
                return ((rec - y) ** 2).mean()
            labelled = (y.flatten(1)[:, :1] >= 0).flatten().to(seg.dtype)
            segmentation = (bce(seg, y.clamp(min=0)) * labelled).mean()
            return alpha * ((rec - x) ** 2).mean() + (1 - alpha) * segmentation
        if pretext:
            return ((torch.sigmoid(output) - y) ** 2).mean()
        loss_value = bce(output, y).mean()
        return loss_value + dice_loss(output, y) if loss == "bce_dice" else loss_value"""}),
    Body(12, "softplus BCE and a loop over the Y-Net's samples", {LOSS: """
        if isinstance(output, tuple):
            seg, rec = output
            if pretext:
                return F.mse_loss(rec, y)
            terms = []
            for z, t in zip(seg, y):
                unlabelled = bool((t < 0).all())
                terms.append(z.sum() * 0 if unlabelled else (F.softplus(z) - z * t).mean())
            return alpha * F.mse_loss(rec, x) + (1 - alpha) * torch.stack(terms).mean()
        if pretext:
            return F.mse_loss(torch.sigmoid(output), y)
        bce = (F.softplus(output) - output * y).mean()
        return bce + dice_loss(output, y) if loss == "bce_dice" else bce"""}),
]
