"""Exercise 11: histogram matching of a source slice to the target domain's mean histogram.

Thesis: App. A (histogram matching, the zero-padding fix: the count of 0 predicted by the line through
the counts of 1 and 2), Table 1; the CDF lookup of scikit-image's match_histograms for uint8.
The checks sweep source slices with and without grey level 0, with gaps between levels, of one level,
all black, square and oblong; targets given as frequencies or counts, dense and sparse; and for the
fix, every case of App. A's rule: 0, 1 and 2 all present with the line above and below 0, 1 or 2
missing, no 0 at all. Outputs are compared with the reference pixel for pixel; where the reference's
grey level lies within 1e-6 of a half, either neighbour passes (the order of a sum may round it).
Images: (H, W) uint8.
"""
import numpy as np

from judging import Exercise, array, check, describe, probe, reference

EXERCISE = Exercise(
    11, title="Histogram matching", thesis="App. A (Histogram matching), Table 1",
    targets=(("degrade.py", "match_histogram"),),
    objective="Match an image's grey-level distribution to a target histogram through the two CDFs, and "
              "discount the zero padding that would otherwise dominate bin 0.",
    minutes=30,
    task="Map the grey levels of a uint8 image so that its CDF follows a target histogram of 256 bins (the "
         "mean histogram of the target domain, counts or frequencies): look each level's quantile in the "
         "source CDF up in the target CDF, by linear interpolation over the target's non-empty levels, and "
         "round. With fix_zero_peak the zero padding is discounted: when the image holds 0, its count "
         "becomes the line through the counts of 1 and 2 evaluated at 0, 2 c1 - c2, never below 0, when 1 "
         "and 2 both occur; else 0, or 1 for an all-black image; and 0 stays 0 in the output. An image "
         "without 0 matches as without the fix. Return a new uint8 image; leave the input as it is.",
    hints=("Build a 256-entry lookup table: for each source level, which target level has the same quantile? "
           "Which bins of the source histogram does the fix change, and which output level does it pin?",
           "Counts by np.bincount, CDFs by np.cumsum, and np.interp looks each source quantile up in the "
           "target's CDF over its non-empty levels: a 256-entry table to index the image with. The fix "
           "edits the source counts before the CDF and pins the table's entry for 0 afterwards."),
    questions=("App. A, Table 1: with histogram matching the Attention U-Net scores 0.679 from Lucchi++ to "
               "Kasthuri++ but only 0.268 the other way. The data set whose slices carry zero padding is "
               "Kasthuri++ (§4.2 notes that Lucchi++ has no large black areas). If 30% of a source slice is "
               "padding and the fix is off, which target level does the darkest tissue map to?",
               "App. A estimates the source count of 0 by linear regression on the first bins. Why not "
               "set it to 0 when 1 and 2 occur: what would that do to the darkest tissue of a dark slice?"),
    withheld=(("tests/test_degrade.py", "_matched_with_line_zeros"),),
)


@probe
def matched(image, target, fix):
    """degrade.match_histogram, and the input afterwards."""
    import degrade
    return {"result": degrade.match_histogram(image, target, fix_zero_peak=fix), "input_after": image}


@reference
def match_reference(image, target_hist, fix):
    """App. A histogram matching in float64 -> the lookup table (256,) before rounding; the output is
    rint(lut)[image]."""
    counts = np.bincount(image.ravel(), minlength=256).astype(np.float64)
    keep_zero = fix and counts[0] > 0
    if keep_zero:
        counts[0] = max(0.0,
                        2 * counts[1] - counts[2]) if counts[1] and counts[2] else float(not counts[1:].any())
    target = np.asarray(target_hist, np.float64)
    levels = np.nonzero(target)[0]
    lut = np.interp(np.cumsum(counts) / counts.sum(), np.cumsum(target[levels]) / target.sum(), levels)
    if keep_zero:
        lut[0] = 0.0
    return lut


def judge(g, image, target, fix, where):
    got = g.run(matched, where=where, image=image, target=target, fix=fix)
    out = got["result"]
    assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == image.shape, \
        f"output on {where}: got {describe(out)} of {getattr(out, 'dtype', '?')}, expected uint8 " \
        f"{image.shape}"
    assert np.array_equal(got["input_after"], image), f"on {where}: the input was changed"
    lut = array(g.expect(match_reference, image, target, fix), "reference")
    want = np.clip(np.rint(lut), 0, 255)[image]
    tie = np.abs(lut - np.floor(lut) - 0.5)[image] < 1e-6  # either neighbour of a half passes
    out = out.astype(np.float64)
    wrong = (out != want) & ~(tie & (np.abs(out - lut[image]) < 1))
    assert not wrong.any(), f"output on {where}: {wrong.mean():.1%} of the pixels differ, by up to " \
                            f"{np.abs(out - want)[wrong].max():.0f} grey levels"


def triangle(low=30, high=201):
    target = np.zeros(256)
    target[low:high] = np.minimum(np.arange(high - low), np.arange(high - low)[::-1]) + 1.0
    return target / target.sum()


def dark_target():
    target = np.zeros(256)
    target[20:200] = np.linspace(1.0, 3.0, 180)
    return target / target.sum()


def dark_slice(c1, c2, zeros=150, border=20, seed=114, shape=(40, 60)):
    """A dark slice with a zero border, `zeros` more 0s inside and exactly c1 pixels of 1 and c2 of 2."""
    rng = np.random.default_rng(seed)
    tissue = rng.integers(3, 45, shape[0] * shape[1])
    tissue[:c1], tissue[c1:c1 + c2], tissue[c1 + c2:c1 + c2 + zeros] = 1, 2, 0
    return np.pad(rng.permutation(tissue).reshape(shape).astype(np.uint8), border)


@check("without the fix each grey level goes to the target level of the same quantile (the CDF lookup, "
       "linear over the target's non-empty levels): slices with and without 0, with gaps or one level; "
       "targets as frequencies or counts, dense or sparse", points=3)
def match_lookup(g):
    rng = np.random.default_rng(110)
    sparse = np.zeros(256)
    sparse[[90, 100, 140]] = [0.2, 0.5, 0.3]
    cases = [(rng.integers(0, 256, (64, 48)), triangle(),
              "a random 64x48 slice holding 0, a triangle target"),
             (rng.integers(30, 221, (40, 50)), triangle(), "a slice without 0 (levels 30 to 220)"),
             (rng.integers(0, 60, (40, 50)) * 4 + 3, dark_target(), "a slice with gaps between levels"),
             (rng.integers(0, 256, (32, 32)), dark_target() * 12345.0, "a target given as counts"),
             (rng.integers(0, 256, (64, 64)), sparse, "a sparse target (levels 90, 100, 140)"),
             (np.full((5, 7), 77), triangle(), "a 5x7 slice of one level"),
             (rng.integers(100, 200, (3, 17)), triangle(60, 250), "a 3x17 slice without 0")]
    for image, target, where in cases:
        judge(g, image.astype(np.uint8), target, False, where + ", fix_zero_peak=False")


@check("fix_zero_peak on a slice with 0, 1 and 2: the count of 0 becomes the line through the counts of 1 "
       "and 2, max(0, 2 c1 - c2) (App. A), and 0 stays 0", points=3)
def match_zero_line(g):
    for c1, c2, what in [(300, 200, "2 c1 - c2 = 400 zeros, not the slice's 4150"),
                         (80, 400, "the line falls below 0: a count of 0"),
                         (200, 200, "c1 = c2: the line gives 200"), (5, 1, "a few 1s and 2s: 9")]:
        judge(g, dark_slice(c1, c2), dark_target(), True,
              f"a dark slice with 0, {c1} 1s and {c2} 2s ({what})")


@check("fix_zero_peak when 1 or 2 is missing: the count of 0 is 0, or 1 for an all-black slice; a slice "
       "without 0 matches as without the fix, whatever its counts of 1 and 2", points=2)
def match_zero_missing(g):
    tissue = np.random.default_rng(113).integers(30, 220, (40, 60)).astype(np.uint8)
    cases = [(dark_slice(300, 0), "a dark slice with 0 and 1s but no 2"),
             (dark_slice(0, 300), "a dark slice with 0 and 2s but no 1"),
             (np.pad(tissue, 20), "a zero border around tissue without 1 or 2"),
             (np.zeros((8, 8), np.uint8), "an all-black slice"),
             (dark_slice(300, 200, zeros=0, border=0), "a dark slice with 1s and 2s but no 0"),
             (tissue, "a slice without 0")]
    for image, where in cases:
        judge(g, image, dark_target(), True, where + ", fix_zero_peak=True")


@check("a Kasthuri++-like slice (a wide zero border, dark tissue with 1s and 2s) matched to a bright target",
       hidden=True)
def match_kasthuri_like(g):
    judge(g, dark_slice(900, 350, zeros=40, border=60, seed=115, shape=(60, 90)), triangle(80, 255), True,
          "a 180x210 slice, fix_zero_peak=True")
