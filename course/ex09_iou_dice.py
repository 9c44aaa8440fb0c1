"""Exercise 9: the foreground IoU and Dice of a segmentation, from counts and from masks.

Thesis: §4.2.1, Eq. 4.1 (Dice), Eq. 4.2 (IoU_F), Fig. 4.5; an empty prediction of an empty mask
scores 1, a slice whose mitochondria are all missed 0.
The checks sweep every count (TP, FP, FN) from 0 to 7, counts in the millions, Python and NumPy
integers (evaluate_stack sums the counts with NumPy), and masks of every kind a caller may pass:
bool, 0/1 and 0/255 integers, fractional and float masks, empty and full ones, 2-D slices and stacks,
any non-zero pixel being foreground. A score must be a number within float32 rounding (1e-6) of
Eq. 4.1-4.2 computed in float64, so float32 arithmetic passes.
"""
import numpy as np

from judging import Exercise, check, describe, probe, reference

EXERCISE = Exercise(
    9, title="IoU_F and Dice", thesis="§4.2.1, Eq. 4.1, Eq. 4.2, Fig. 4.5",
    targets=(("evaluate.py", "iou_from_counts"), ("evaluate.py", "dice_from_counts"),
             ("evaluate.py", "iou_foreground"), ("evaluate.py", "dice_coefficient")),
    objective="Score a segmentation by its foreground only, with the edge cases (empty masks, missed "
              "objects) that a test slice can hold.",
    minutes=15,
    task="Dice = 2TP / (2TP + FP + FN) and IoU_F = TP / (TP + FP + FN), the foreground (mitochondria) being "
         "the positive class. Write both from the counts, Python or NumPy integers (an empty prediction of "
         "an empty mask scores 1; a slice whose mitochondria are all missed scores 0), and from two masks "
         "of any dtype and shape, any non-zero pixel being foreground (`confusion` gives the counts). "
         "Return a Python float (the run writes the scores to JSON). True negatives do not enter: the "
         "background dominates EM slices, and counting it would inflate the score, which is why the "
         "thesis reports IoU_F.",
    hints=("Write down TP, FP and FN for a prediction that finds nothing on a slice that has mitochondria, "
           "and for one that finds nothing on a slice that has none: which of the two is 0 / 0?",
           "Guard only the 0 / 0 case (TP + FP + FN == 0) before dividing, and return a float; the mask "
           "versions are the count versions applied to confusion(pred, mask)."),
    questions=("§4.2.1 reports IoU_F rather than the mean IoU of both classes. For 3 true positives, 3 "
               "false "
               "positives, 1 false negative and 1584 true negatives, compute IoU_F and the background IoU: "
               "which one would hide the errors?",
               "Dice = 2 IoU_F / (1 + IoU_F) holds for every slice (Eq. 4.1, Eq. 4.2). Does it still hold "
               "between the means over the 165 test slices of Lucchi++ (§4.1), and why not?"),
)

TOL = 1e-6  # float32 arithmetic: a few roundings of 6e-8 on a score in [0, 1]
NAMES = {"counts": ("iou_from_counts", "dice_from_counts"), "masks": ("iou_foreground", "dice_coefficient")}


@probe
def scores_of(kind, items, numpy_ints=False):
    """IoU_F and Dice of each item (counts or a (pred, mask) pair): the value, or what came back."""
    import evaluate

    def number(v):  # a Python number: the run writes the scores to JSON, which takes no NumPy float32
        plain = isinstance(v, (int, float)) and not isinstance(v, bool)
        return {"value": float(v)} if plain else {"got": type(v).__name__}
    if kind == "counts" and numpy_ints:
        items = [tuple(np.int64(c) for c in item) for item in items]
    return {name: [number(getattr(evaluate, name)(*item)) for item in items] for name in NAMES[kind]}


@probe
def stack_scores(probs, masks):
    import evaluate
    r = evaluate.evaluate_stack(list(probs), list(masks))
    return {"result": {k: r.get(k) for k in ("test_iou_f", "test_iou_f_global", "test_dice",
                                             "test_dice_global")}}


@reference
def count_scores(items):
    """(IoU_F, Dice) of each (TP, FP, FN) in float64; 1 for 0 / 0."""
    return [(tp / (tp + fp + fn) if tp + fp + fn else 1.0,
             2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
            for tp, fp, fn in items]


@reference
def mask_counts(items):
    """(TP, FP, FN) of each (pred, mask) pair, any non-zero pixel being foreground."""
    out = []
    for pred, mask in items:
        p, m = np.asarray(pred) != 0, np.asarray(mask) != 0
        out.append((int((p & m).sum()), int((p & ~m).sum()), int((~p & m).sum())))
    return out


def judge(g, kind, items, labels, numpy_ints=False):
    """IoU_F and Dice of every item against Eq. 4.1-4.2; `labels` name the items in a message."""
    got = g.run(scores_of, where="; ".join(labels), kind=kind, items=items, numpy_ints=numpy_ints)
    counts = items if kind == "counts" else g.expect(mask_counts, items)
    for i, (iou, dice) in enumerate(g.expect(count_scores, [tuple(c) for c in counts])):
        for name, label, want in zip(NAMES[kind], ("IoU_F", "Dice"), (iou, dice)):
            answer = (got.get(name) or [{}] * len(items))[i]
            where = labels[i] + (" (NumPy integers)" if numpy_ints else "")
            assert "value" in answer, f"{label} on {where}: got {answer.get('got', describe(None))}, " \
                                      "expected a Python float"
            assert abs(answer["value"] - want) <= TOL, \
                f"{label} on {where}: {answer['value']:.6g}, expected {want:.6g} (allowed {TOL:g})"


@check("IoU_F = TP / (TP + FP + FN) and Dice = 2TP / (2TP + FP + FN) from the counts: every count from 0 "
       "to 7, counts in the millions, Python and NumPy integers", points=2)
def scores_counts(g):
    items = [(tp, fp, fn) for tp in (1, 2, 3, 7) for fp in (0, 1, 3) for fn in (0, 1, 5)]
    items += [(10**6, 3 * 10**6, 10**6), (2**31, 1, 2**30), (999_999, 1, 0)]
    labels = [f"counts (TP, FP, FN) = {item}" for item in items]
    judge(g, "counts", items, labels)
    judge(g, "counts", items[:9] + items[-3:], labels[:9] + labels[-3:], numpy_ints=True)


@check("the edge cases: an empty prediction of an empty mask scores 1; a slice whose mitochondria are all "
       "missed, or with false positives only, scores 0", points=2)
def scores_edges(g):
    items = [(0, 0, 0), (0, 0, 7), (0, 0, 1), (0, 5, 0), (0, 2, 3)]
    labels = [f"counts (TP, FP, FN) = {item}" for item in items]
    judge(g, "counts", items, labels)
    judge(g, "counts", items, labels, numpy_ints=True)
    empty, full = np.zeros((4, 5), bool), np.ones((4, 5), bool)
    judge(g, "masks", [(empty, empty), (empty, full), (full, empty), (full, full)],
          ["an empty prediction of an empty 4x5 mask", "an empty prediction of a full 4x5 mask",
           "a full prediction of an empty 4x5 mask", "a full prediction of a full 4x5 mask"])


def mask_pairs():
    """(pred, mask) pairs of every kind a caller passes, with labels."""
    rng = np.random.default_rng(90)
    base = [rng.random((20, 30)) < q for q in (0.3, 0.6)]
    pairs = [((base[0], base[1]), "bool 20x30 masks"),
             ((base[0].astype(np.uint8), base[1].astype(np.uint8)), "0/1 uint8 masks"),
             ((base[0].astype(np.uint8), 255 * base[1].astype(np.uint8)),
              "a 0/1 prediction of a 0/255 mask"),
             ((base[0] * rng.uniform(0.05, 1, base[0].shape), base[1].astype(np.float32)),
              "a fractional prediction (any value > 0 is foreground) of a float32 mask"),
             ((base[0].astype(np.int64) * 2, base[1]), "a 0/2 int64 prediction of a bool mask"),
             ((np.pad(base[0], 40), np.pad(base[1], 40)), "bool masks with 9000 more background pixels"),
             ((rng.random((3, 8, 9)) < 0.4, rng.random((3, 8, 9)) < 0.5), "a stack of 3 bool 8x9 masks")]
    return [p for p, _ in pairs], [label for _, label in pairs]


@check("from two masks any non-zero pixel is foreground: bool, 0/1, 0/255, fractional and float masks, "
       "slices and stacks; true negatives do not count", points=2)
def scores_masks(g):
    items, labels = mask_pairs()
    judge(g, "masks", items, labels)


@check("evaluate_stack: the per-slice mean (the thesis's number) and the IoU_F and Dice pooled over the "
       "stack")
def scores_stack(g):
    rng = np.random.default_rng(91)
    masks = [rng.random((10, 12)) < 0.3, np.zeros((10, 12), bool), rng.random((10, 12)) < 0.05]
    probs = [rng.random((10, 12)).astype(np.float32) * (0.5 + m) for m in masks]
    got = g.run(stack_scores, where="a stack of 3 slices", probs=probs, masks=masks)["result"]
    counts = g.expect(mask_counts, [(p > 0.5, m) for p, m in zip(probs, masks)])
    per_slice = g.expect(count_scores, counts)
    pooled = g.expect(count_scores, [tuple(np.sum(counts, axis=0).tolist())])[0]
    want = {"test_iou_f": np.mean([s[0] for s in per_slice]), "test_iou_f_global": pooled[0],
            "test_dice": np.mean([s[1] for s in per_slice]), "test_dice_global": pooled[1]}
    for key, value in want.items():
        assert isinstance(got.get(key), float) and abs(got[key] - value) <= TOL, \
            f"{key} on a stack of 3 slices (one with an empty mask): {got.get(key)}, expected {value:.6g}"


@check("counts near 2^31 and stacks of masks of other shapes", hidden=True)
def scores_large(g):
    items = [(2**31 - 1, 2**31 - 1, 1), (1, 2**32, 0)]
    judge(g, "counts", items, [f"counts {item}" for item in items], numpy_ints=True)
    rng = np.random.default_rng(92)
    pairs = [(rng.random((2, 5, 7)) < 0.5, rng.random((2, 5, 7)) < 0.5),
             (rng.random((1, 1)) < 2, np.ones((1, 1)))]
    judge(g, "masks", pairs, ["a stack of two 5x7 masks", "a 1x1 slice, both foreground"])
