"""Exercise 10: two pretext degradations of the self-supervised pre-training, noise and cutout.

Thesis: §3.3, Fig. 3.2, Table 5.5 (Gaussian noise of sigma = 0.15 * 255; cutout, 1 to 5 boxes of 20%
of H and W, as imgaug's Cutout: centres uniform over the image, boxes cut off at its border).
Both are stochastic, so the checks judge statistics over many seeded draws against the exact law of
the reference (computed, not sampled): for the noise, the mean, the mean distance to the clean level
and the mean distance between neighbours at sigma 1 (rounding shows) to 100 and at the levels 0 and
255 (clipping shows); for cutout, the box count from n_min to n_max, how often boxes touch each
border (where their centres fall), and each box's size and fill for odd and oblong images and sizes.
Each bound is exceeded by a correct body with probability below 1e-9 on any seed (judging.DELTA).
Images: (H, W) uint8.
"""
import math

import numpy as np

from judging import DELTA, Exercise, agree, check, describe, gaussian_bound, hoeffding, probe, reference

EXERCISE = Exercise(
    10, title="Two pretext degradations", thesis="§3.3, Fig. 3.2, Table 5.5",
    targets=(("degrade.py", "gaussian_noise"), ("degrade.py", "cutout")),
    objective="Write two of the self-supervised pretext degradations as pure functions of an image and a "
              "seeded generator, with uint8 arithmetic that rounds and clips.",
    minutes=20,
    task="gaussian_noise adds N(0, sigma) noise, sigma = 0.15 * 255 by default, drawn once per pixel from "
         "rng, then rounds and clips to uint8. cutout fills between n_min and n_max boxes (both included, "
         "for any n_min and n_max) of round(size * H) x round(size * W) pixels with `fill`; each box centre "
         "is uniform over the image, and a box is cut off where it leaves the image. Both are pure: they "
         "never change their input and draw only from rng.",
    hints=("What happens to 250 + 20 in uint8 arithmetic, and to -0.6 under astype(np.uint8)? Where may a "
           "box's centre lie, and what happens to the part of a box outside the image?",
           "_to_uint8 rounds and clips; rng.integers(low, high) never returns high; slicing with a negative "
           "start wraps around in NumPy, so clamp the top-left corner at 0 before slicing."),
    questions=("Table 5.5: pre-training on Gaussian noise gave +0.019 and cutout +0.015 over the 0.852 "
               "baseline, below the blurs and low-resolution emulation (+0.024). What difference between "
               "the two families does §5.3 point to?",),
)


@probe
def draws(name, image, seeds, kwargs=None):
    """degrade.<name>(image, rng) once per seed, stacked when they share a shape; the input afterwards."""
    import degrade
    fn = getattr(degrade, name)
    results = [fn(image, np.random.default_rng(seed), **(kwargs or {})) for seed in seeds]
    same = all(isinstance(r, np.ndarray) and r.shape == results[0].shape for r in results)
    return {"results": np.stack(results) if results and same else results, "input_after": image}


def outputs(g, name, image, seeds, where, **kwargs):
    """(draws, H, W) uint8 outputs, checked for their form."""
    got = g.run(draws, where=where, name=name, image=image, seeds=seeds, kwargs=kwargs)["results"]
    assert isinstance(got, np.ndarray) and got.dtype == np.uint8 and got.shape[1:] == image.shape, \
        f"{name} on {where}: got {describe(got)} of {getattr(got, 'dtype', '?')}, expected uint8 " \
        f"{image.shape}"
    return got.astype(np.float64)


# ---------------------------------------------------------------- gaussian_noise

@reference
def noise_law(level, sigma):
    """The law of clip(rint(level + N(0, sigma))) over 0..255 -> (p, mean, mean |X - level|, mean |X - X'|),
    X and X' independent."""
    if sigma == 0:
        p = np.zeros(256)
        p[level] = 1.0
    else:
        cdf = [0.5 * (1 + math.erf((k + 0.5 - level) / (sigma * math.sqrt(2)))) for k in range(-1, 256)]
        p = np.diff(cdf)
        p[0] += cdf[0]
        p[-1] += 1 - cdf[-1]
    k = np.arange(256)
    return p, float(p @ k), float(p @ np.abs(k - level)), float(p @ np.abs(k[:, None] - k[None, :]) @ p)


def judge_noise(g, level, sigma, seed):
    """The output's mean, its mean distance to the clean level and between neighbours, against the law.
    Each statistic is a 1-Lipschitz function of Gaussians plus a rounding within 1 (a pair: sqrt 2 and 2),
    so its mean is off by at most gaussian_bound + hoeffding with chance DELTA (each half of it)."""
    image = np.full((256, 320), level, np.uint8)
    kwargs = {} if sigma is None else {"sigma": sigma}
    sigma = 0.15 * 255 if sigma is None else sigma
    where = f"sigma={sigma:g}{' (the default)' if not kwargs else ''}, a 256x320 image of {level}"
    out = outputs(g, "gaussian_noise", image, [seed], where, **kwargs)[0]
    _, mean, spread, neighbours = g.expect(noise_law, level, sigma)
    n = out.size

    def bound(count, lipschitz, span):
        return gaussian_bound(count, lipschitz * sigma, DELTA / 2) + hoeffding(count, span, DELTA / 2)
    agree(out.mean(), mean, bound(n, 1, 1), "mean of the noisy image", where)
    agree(np.abs(out - level).mean(), spread, bound(n, 1, 1), "mean distance to the clean level", where)
    for axis, pairs in (("rows", (out[:, 0::2], out[:, 1::2])), ("columns", (out[0::2], out[1::2]))):
        agree(np.abs(pairs[0] - pairs[1]).mean(), neighbours, bound(pairs[0].size, math.sqrt(2), 2),
              f"mean distance between neighbours along the {axis} (independent per pixel)", where)


@check("gaussian_noise: N(0, sigma) per pixel, rounded: the law of the output at sigma 1, 10, 38.25 (the "
       "default) and 100", points=2)
def noise_law_mid_grey(g):
    for sigma, seed in [(1.0, 100), (10.0, 101), (None, 102), (100.0, 103)]:
        judge_noise(g, 128, sigma, seed)


@check("gaussian_noise clips to [0, 255] instead of wrapping around (images of 0 and of 255)")
def noise_clips(g):
    for level, seed in [(0, 104), (255, 105)]:
        judge_noise(g, level, None, seed)


@check("gaussian_noise and cutout are pure: the input is left as it was, the same seed gives the same "
       "image, only rng is drawn from, and sigma 0 changes nothing")
def degrade_pure(g):
    image = np.random.default_rng(106).integers(1, 255, (64, 48)).astype(np.uint8)
    for name in ("gaussian_noise", "cutout"):
        where = "a random 64x48 image, seeds 107, 107, 108"
        got = g.run(draws, where=where, name=name, image=image, seeds=[107, 107, 108])
        assert np.array_equal(got["input_after"], image), f"{name} on {where}: the input was changed"
        out = outputs(g, name, image, [107, 107, 108], where)
        assert np.array_equal(out[0], out[1]), f"{name} on {where}: the same seed gave different images"
        assert not np.array_equal(out[0], out[2]), f"{name} on {where}: two seeds gave the same image"
    out = outputs(g, "gaussian_noise", image, [109], "sigma=0", sigma=0.0)[0]
    assert np.array_equal(out, image), "gaussian_noise on sigma=0, a random 64x48 image: the image changed"


# ---------------------------------------------------------------- cutout

def boxes(cut, where):
    """(top, bottom, left, right) of the one rectangle of True in `cut`; AssertionError if it is not one."""
    rows, cols = np.nonzero(cut)
    assert len(rows), f"on {where}: nothing was cut"
    top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    assert cut[top:bottom, left:right].all() and cut.sum() == (bottom - top) * (right - left), \
        f"on {where}: the cut is not one rectangle"
    return top, bottom, left, right


@reference
def box_size(H, W, size):
    """The (rows, columns) of a whole box: round(size * H) x round(size * W), at least 1 x 1."""
    return max(1, round(size * H)), max(1, round(size * W))


@check("cutout: one box is round(size H) x round(size W), cut off where it leaves the image, filled with "
       "`fill`, the rest unchanged; odd, oblong images and sizes", points=2)
def cutout_box(g):
    for H, W, size, fill in [(53, 42, 0.2, 0), (30, 30, 0.4, 7), (17, 60, 0.1, 255), (40, 25, 0.25, 0)]:
        h, w = g.expect(box_size, H, W, size)
        levels = [v for v in range(1, 255) if v != fill]
        image = np.random.default_rng(H).choice(levels, (H, W)).astype(np.uint8)
        where = f"a {H}x{W} image, size={size}, fill={fill}, n_min=n_max=1"
        outs = outputs(g, "cutout", image, list(range(60)), where, n_min=1, n_max=1, size=size, fill=fill)
        inner = 0
        for seed, out in enumerate(outs):
            cut = out != image
            top, bottom, left, right = boxes(cut, f"{where}, seed {seed}")
            assert (out[cut] == fill).all(), \
                f"on {where}, seed {seed}: the box holds values other than {fill}"
            inside = top > 0 and left > 0 and bottom < H and right < W
            whole = (bottom - top, right - left) == (h, w)
            size_ok = whole if inside else bottom - top <= h and right - left <= w
            assert size_ok, \
                f"on {where}, seed {seed}: a box of {bottom - top}x{right - left}, expected {h}x{w} " \
                "(less only where the border cuts it)"
            inner += inside
        assert inner, f"on {where}: no box of 60 lies inside the image"


@reference
def count_law(n_min, n_max):
    """P(n boxes) for n = 0 .. n_max: uniform from n_min to n_max, both included."""
    return [1 / (n_max - n_min + 1) if n >= n_min else 0.0 for n in range(n_max + 1)]


@check("cutout: the number of boxes is uniform from n_min to n_max, both included, for any n_min and "
       "n_max", points=2)
def cutout_count(g):
    image = np.full((50, 50), 100, np.uint8)  # boxes of 1 x 1 pixel: the count is the number of pixels cut
    for n_min, n_max in [(1, 5), (0, 2), (2, 2), (3, 7)]:
        where = f"n_min={n_min}, n_max={n_max}, 1x1 boxes on a 50x50 image, 1000 draws"
        outs = outputs(g, "cutout", image, list(range(1000)), where, n_min=n_min, n_max=n_max, size=0.02)
        counts = (outs != 100).sum(axis=(1, 2))
        # Hoeffding per count, plus the chance that two of at most 7 boxes hit one pixel (21 / 2500)
        bound = hoeffding(len(counts)) + 21 / 2500
        law = g.expect(count_law, n_min, n_max)
        for n in sorted(set(range(max(0, n_min - 1), n_max + 2)) | set(counts.tolist())):
            agree((counts == n).mean(), law[n] if n < len(law) else 0.0, bound,
                  f"share of draws with {n} boxes",
                  where)


@reference
def border_law(H, W, size):
    """How often a box touches each border (top, bottom, left, right) when its centre is uniform over the
    image: the reference's placement integrated over 100000 centres per axis."""
    centres = (np.arange(100000) + 0.5) / 100000
    shares = []
    for side, n in ((H, round(size * H)), (W, round(size * W))):
        first = np.floor(centres * side - n / 2)
        shares += [float((first <= 0).mean()), float((first + n >= side).mean())]
    return shares


@check("cutout: box centres are uniform over the image: boxes touch each border as often as the "
       "reference's", points=2)
def cutout_centres(g):
    H, W, size = 40, 48, 0.25  # boxes of 10 x 12: even sides, so whole-pixel centres have the same law
    image = np.full((H, W), 100, np.uint8)
    where = f"a {H}x{W} image, size={size}, n_min=n_max=1, 4000 draws"
    outs = outputs(g, "cutout", image, list(range(4000)), where, n_min=1, n_max=1, size=size)
    cut = outs == 0
    touches = [cut[:, 0].any(1).mean(), cut[:, -1].any(1).mean(), cut[:, :, 0].any(1).mean(),
               cut[:, :, -1].any(1).mean()]
    laws = g.expect(border_law, H, W, size)
    for border, got, want in zip(("top", "bottom", "left", "right"), touches, laws):
        agree(got, want, hoeffding(len(outs)), f"share of boxes touching the {border} border", where)


@check("gaussian_noise at sigma 5 near both ends (levels 3 and 252) and cutout's box count 0 to 1",
       hidden=True)
def degrade_ends(g):
    for level, seed in [(3, 110), (252, 111)]:
        judge_noise(g, level, 5.0, seed)
    image = np.full((50, 50), 100, np.uint8)
    counts = (outputs(g, "cutout", image, list(range(1000)), "n_min=0, n_max=1", n_min=0, n_max=1,
                      size=0.02) != 100).sum(axis=(1, 2))
    agree((counts == 0).mean(), g.expect(count_law, 0, 1)[0], hoeffding(1000) + 1 / 2500,
          "share of draws with 0 boxes", "n_min=0, n_max=1, 1x1 boxes on a 50x50 image, 1000 draws")
