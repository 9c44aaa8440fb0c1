"""Exercise 7: mirror padding up to a multiple, for training tiles and whole-slice inference.

Thesis: §4.3.1 (256 x 256 training tiles), §4.2 and Fig. 4.4 (mirror, not zero, padding); NumPy's
'symmetric' mode repeats the edge pixel, as `mirror_border` in the thesis code.
The checks sweep padding_for over every size from 1 to three multiples for the multiples the callers
use (1, 2, 3, 16, 128, 256) and the slice sides of Lucchi++ and Kasthuri++, and pad_to_multiple over
2-D slices and stacks with one or two leading axes, of uint8, bool, int64, float32 and float64,
odd and oblong shapes, sides that are already multiples, and paddings wider than the slice itself.
Every answer is exact: padding moves pixels, it computes nothing.
Shapes: (..., H, W) slices, any leading axes.
"""
import numpy as np

from judging import Exercise, array, check, close, describe, probe, reference

EXERCISE = Exercise(
    7, title="Mirror padding to a multiple", thesis="§4.3.1, §4.2, Fig. 4.4",
    targets=(("data.py", "padding_for"), ("data.py", "pad_to_multiple")),
    objective="Pad any stack of slices up to a multiple with NumPy's 'symmetric' mirror, and tell it from "
              "'reflect' and zero padding.",
    minutes=15,
    task="Training tiles (256) and whole-slice U-Net inference (16) both mirror-pad a slice up to the next "
         "multiple. padding_for(size, multiple) gives (before, after), the odd pixel before, nothing when "
         "size is already a multiple, for any size and multiple. pad_to_multiple pads the last two axes of "
         "any array with NumPy's 'symmetric' mode, which repeats the edge pixel (d c b a | a b c d) and "
         "mirrors again where the padding is wider than the slice; it leaves leading axes, the dtype and its "
         "input as they are.",
    hints=("How much padding does a side of 1463 need to reach a multiple of 256, and which side gets the "
           "odd pixel? Then: which of np.pad's modes repeats the edge pixel?",
           "The total padding is what size lacks to the next multiple, nothing when it lacks nothing "
           "(Python's % of a negative number does both); np.pad takes one (before, after) pair per axis, "
           "(0, 0) for the leading ones; 'reflect' would give d c b | a b c d, without the edge pixel."),
    questions=("Lucchi++ slices are 768 x 1024 and Kasthuri++ training slices 1463 x 1613 (§4.1). How many "
               "256 x 256 training tiles does one slice of each give after padding (§4.3.1)?",
               "§4.2 first padded the overlap tiles with zeros. What did that do to UNETR-2D's predictions "
               "(Fig. 4.4), and why does self-attention spread the damage over the whole window?"),
    withheld=(("tests/test_data.py", "_mirror_reference"), ("tests/test_data.py", "_symmetric_reference")),
)


@probe
def amounts(pairs):
    """data.padding_for(size, multiple) for each pair."""
    import data
    return {"result": [data.padding_for(size, multiple) for size, multiple in pairs]}


@probe
def padded(image, multiple):
    """data.pad_to_multiple, its dtype, and the input afterwards."""
    import data
    out = data.pad_to_multiple(image, multiple)
    return {"result": out, "dtype": str(getattr(out, "dtype", None)), "input_after": image}


@reference
def padding_reference(pairs):
    """(before, after) for each (size, multiple): what size lacks to the next multiple, odd pixel first."""
    return [((-size % multiple + 1) // 2, -size % multiple // 2) for size, multiple in pairs]


@reference
def symmetric_padding(image, multiple):
    """np.pad's 'symmetric' mode on the last two axes, up to the next multiple, the odd pixel before."""
    total = [-n % multiple for n in image.shape[-2:]]
    pad = [(0, 0)] * (image.ndim - 2) + [((t + 1) // 2, t // 2) for t in total]
    return np.pad(image, pad, mode="symmetric")


def judge_amounts(g, pairs, what):
    got = g.run(amounts, where=what, pairs=pairs)["result"]
    want = g.expect(padding_reference, pairs)
    for (size, multiple), answer, expected in zip(pairs, got, want):
        try:
            value = tuple(int(v) for v in answer)
        except (TypeError, ValueError):
            value = answer
        assert value == tuple(expected), \
            f"padding_for on size={size}, multiple={multiple} ({what}): got {answer}, expected " \
            f"{tuple(expected)}"


@check("padding_for: the total is what size lacks to the next multiple, nothing when it lacks nothing, "
       "the odd pixel first; every size up to three multiples, multiples from 1 to 256", points=2)
def padding_amounts(g):
    small = [(size, m) for m in (1, 2, 3, 16) for size in range(1, 3 * m + 1)]
    judge_amounts(g, small, "small sizes")
    thesis = [(size, m) for m in (16, 128, 256) for size in (768, 1024, 1463, 1613, 1334, 1553, 165, 1, 255)]
    judge_amounts(g, thesis, "slice sides of Lucchi++ and Kasthuri++")
    judge_amounts(g, [(size, 256) for size in range(200, 530, 7)], "sides around one and two tiles")


def judge_padding(g, image, multiple, where):
    got = g.run(padded, where=where, image=image, multiple=multiple)
    want = g.expect(symmetric_padding, image, multiple)
    close(got["result"], want, "padded slice", where)
    assert got["dtype"] == str(image.dtype), \
        f"padded slice on {where}: dtype {got['dtype']}, expected the input's {image.dtype}"
    close(got["input_after"], image, "the input, after padding", where)


def image_case(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, shape) if dtype != np.bool_ else rng.random(shape) < 0.5
    image = image.astype(dtype) if dtype != np.float32 else rng.random(shape, dtype=np.float32)
    return image


@check("pad_to_multiple mirrors the last two axes with the edge pixel repeated (d c b a | a b c d, NumPy's "
       "'symmetric'), odd and oblong slices, multiples from 2 to 256", points=2)
def padding_mirror(g):
    for shape, dtype, multiple in [((2, 2), np.int64, 5), ((13, 7), np.uint8, 8), ((9, 20), np.float32, 4),
                                   ((300, 500), np.uint8, 256), ((17, 3), np.float64, 2)]:
        image = image_case(shape, dtype, seed=sum(shape))
        judge_padding(g, image, multiple,
                      f"a {shape[0]}x{shape[1]} {np.dtype(dtype)} slice, multiple={multiple}")


@check("leading axes stay as they are and the dtype is kept: stacks (n, H, W) and (a, b, H, W) of uint8, "
       "bool, int64 and float32")
def padding_leading_axes(g):
    for shape, dtype, multiple in [((3, 5, 7), np.uint8, 4), ((2, 1, 13, 7), np.float32, 8),
                                   ((2, 7, 9), np.bool_, 2), ((1, 3, 6, 5), np.int64, 3)]:
        image = image_case(shape, dtype, seed=len(shape) + multiple)
        judge_padding(g, image, multiple, f"a {np.dtype(dtype)} stack of shape {shape}, multiple={multiple}")


@check("padding wider than the slice mirrors again, as np.pad does (1 x 3 to 6, 5 x 3 to 16)")
def padding_wider_than_slice(g):
    for shape, multiple in [((1, 3), 6), ((5, 3), 16), ((2, 2), 7)]:
        image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        judge_padding(g, image, multiple, f"a {shape[0]}x{shape[1]} float32 slice, multiple={multiple}")


@check("a slice whose sides are already multiples comes back unchanged, and so does any slice with "
       "multiple 1")
def padding_none_needed(g):
    for shape, dtype, multiple in [((32, 48), np.float32, 16), ((20, 30), np.uint8, 1), ((1, 1), np.uint8, 1),
                                   ((2, 256, 512), np.uint8, 256)]:
        image = image_case(shape, dtype, seed=multiple)
        got = g.run(padded, where=f"shape {shape}, multiple={multiple}", image=image,
                    multiple=multiple)["result"]
        assert isinstance(got, np.ndarray), f"on {shape}, multiple={multiple}: got {describe(got)}"
        close(array(got, "padded slice", shape, f"shape {shape}, multiple={multiple}"), image,
              "padded slice",
              f"shape {shape}, multiple={multiple}")


@check("a Kasthuri++ training slice (1463 x 1613) and a test slice (1334 x 1553) to a multiple of 256",
       hidden=True)
def padding_kasthuri(g):
    for shape in [(1463, 1613), (1334, 1553)]:
        image = image_case(shape, np.uint8, seed=shape[0])
        judge_padding(g, image, 256, f"a {shape[0]}x{shape[1]} uint8 slice, multiple=256")
