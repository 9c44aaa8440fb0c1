"""Exercise 8: the overlap-tile layout of whole-slice inference for the transformers.

Thesis: §4.2, Fig. 4.2 (sides divisible by 128: 64 px of mirror padding each end), Fig. 4.3 (any
other side: the least padding, the border relevant patches grown to the image border).
The checks sweep slice sides from 1 to 1613 (square and oblong, the test slices of Lucchi++ and
Kasthuri++, sides below one window and below one kept part), the window and kept sizes the callers
use (256 / 128 for the thesis's models, half a window for smaller ones, and others), and compare
padding, windows, kept parts and offsets with the layout of §4.2 exactly; stitch.predict_tiled, the
caller, must give the identity's input back.
Legend: H x W slice; boxes are (top, left, bottom, right), half-open.
"""
import numpy as np

from judging import Exercise, check, close, describe, probe, reference

EXERCISE = Exercise(
    8, title="Overlap-tile layout", thesis="§4.2, Fig. 4.2, Fig. 4.3",
    targets=(("stitch.py", "_axis_layout"), ("stitch.py", "tile_layout")),
    objective="Lay out the overlap-tile windows of §4.2 for any slice size so that every output pixel comes "
              "from exactly one window centre and never from padding.",
    minutes=35,
    task="Lay window x window windows (256 in the thesis) at stride keep (128) over a mirror-padded slice so "
         "that their central keep x keep relevant patches tile it. A side divisible by keep gets "
         "(window - keep) / 2 px of padding at each end (Fig. 4.2); any other side gets the least padding "
         "that makes it a multiple of keep with room for the margins, split as evenly as possible (the odd "
         "pixel on top/left), and the border relevant patches grow until they reach the image border, so no "
         "kept pixel is padding (Fig. 4.3). _axis_layout solves one axis; tile_layout combines both axes "
         "into row-major Tile(window, kept, offset) records plus the padding for np.pad.",
    hints=("Solve one axis on paper first, for 384 and for 320 (the drawings in tile_layout's docstring): "
           "how many windows, where does each start, which rows does each keep?",
           "With margin m = (window - keep) / 2 and n = max(1, size // keep) windows, the padded side is "
           "n * keep + 2m and window k starts at k * keep; its kept part is [m + k * keep, m + (k + 1) * "
           "keep) minus the padding before, stretched to 0 for the first and to size for the last."),
    questions=("A Lucchi++ test slice is 768 x 1024 (case 1, Fig. 4.2). How many windows does the network "
               "run on, and what fraction of the pixels it predicts is thrown away?",
               "§4.2 first tried non-overlapping 256 x 256 tiles. Where did the errors concentrate, and why "
               "does keeping only the window centres remove them?"),
)

SIDES = [1, 2, 63, 64, 100, 127, 128, 129, 200, 255, 256, 257, 300, 320, 333, 384, 385, 511, 640, 768, 1024,
         1334, 1463, 1553, 1613]
SLICES = list(zip(SIDES, reversed(SIDES))) + [(768, 1024), (1334, 1553)]


@probe
def layouts(sizes, window, keep):
    """stitch.tile_layout(H, W, window, keep) for each (H, W)."""
    import stitch
    return {"result": [stitch.tile_layout(H, W, window, keep) for H, W in sizes]}


@probe
def axis_layouts(sizes, window, keep):
    import stitch
    return {"result": [stitch._axis_layout(size, window, keep) for size in sizes]}


@probe
def stitch_identity(image, window, keep):
    import stitch
    return {"result": stitch.predict_tiled(lambda batch: batch.copy(), image, window=window, keep=keep)}


@reference
def axis_reference(size, window, keep):
    """One axis of §4.2: (pad_before, pad_after) and (window start, kept start, kept end) per window."""
    margin = (window - keep) // 2
    n = max(1, size // keep)
    if n * keep + 2 * margin < size:
        n += 1
    pad = n * keep + 2 * margin - size
    before = pad - pad // 2
    spans = [(k * keep, 0 if k == 0 else margin + k * keep - before,
              size if k == n - 1 else margin + (k + 1) * keep - before) for k in range(n)]
    return (before, pad // 2), spans


@reference
def layout_reference(sizes, window, keep):
    """[(tiles as (window, kept, offset), padding)] of each (H, W), tiles in row-major order."""
    out = []
    for H, W in sizes:
        (rows_pad, rows), (cols_pad, cols) = axis_reference(H, window, keep), axis_reference(W, window, keep)
        tiles = [((wt, wl, wt + window, wl + window), (t, l, b, r),
                  (t + rows_pad[0] - wt, l + cols_pad[0] - wl))
                 for wt, t, b in rows for wl, l, r in cols]
        out.append((tiles, (rows_pad, cols_pad)))
    return out


@reference
def axis_reference_all(sizes, window, keep):
    """axis_reference of each side."""
    return [axis_reference(size, window, keep) for size in sizes]


def as_ints(x):
    """Nested tuples of ints, or None when x is not nested sequences of integers."""
    if isinstance(x, (list, tuple)):
        parts = [as_ints(v) for v in x]
        return None if any(p is None for p in parts) else tuple(parts)
    return int(x) if isinstance(x, (int, np.integer)) and not isinstance(x, bool) else None


def judge_layouts(g, sizes, window, keep, part):
    """Compare `part` ('padding', 'window', 'kept') of tile_layout with §4.2's for each slice size."""
    got = g.run(layouts, where=f"{len(sizes)} slice sizes, window={window}, keep={keep}", sizes=sizes,
                window=window, keep=keep)["result"]
    for (H, W), answer, (tiles, padding) in zip(sizes, got, g.expect(layout_reference, sizes, window, keep)):
        where = f"a {H}x{W} slice, window={window}, keep={keep}"
        answer = as_ints(answer if isinstance(answer, (list, tuple)) else None)
        shape_ok = answer and len(answer) == 2 and all(t and len(t) >= 3 for t in answer[0] or [None])
        assert shape_ok and len(answer[1]) == 2, f"tile_layout on {where}: got {describe(answer)}, " \
            "expected (tiles of Tile(window, kept, offset), ((top, bottom), (left, right)))"
        got_tiles, got_padding = [t[:3] for t in answer[0]], answer[1]
        if part == "padding":
            assert got_padding == as_ints(padding), \
                f"padding on {where}: {got_padding}, expected {as_ints(padding)} ((top, bottom), (left, " \
                "right))"
            continue
        assert len(got_tiles) == len(tiles), f"windows on {where}: {len(got_tiles)}, expected {len(tiles)}"
        for i, (mine, want) in enumerate(zip(got_tiles, as_ints(tiles))):
            if part == "window":
                assert mine[0] == want[0], f"tile {i} on {where}: window {mine[0]}, expected {want[0]}"
            else:
                assert mine[1:] == want[1:], f"tile {i} on {where}: kept {mine[1]} at offset {mine[2]}, " \
                                             f"expected kept {want[1]} at offset {want[2]}"


@check("the padding: (window - keep) / 2 at each end of a side divisible by 128 (Fig. 4.2), otherwise the "
       "least that makes it fit, split evenly, the odd pixel on top / left (Fig. 4.3); sides from 1 to 1613",
       points=2)
def layout_padding(g):
    judge_layouts(g, SLICES, 256, 128, "padding")


@check("the windows: 256 x 256 at stride 128 in row-major order, as many as the padded slice holds",
       points=2)
def layout_windows(g):
    judge_layouts(g, SLICES, 256, 128, "window")


@check("the kept parts are the 128 x 128 window centres, grown only to reach the image border, and their "
       "offsets place them in their windows: every pixel from exactly one window", points=2)
def layout_kept(g):
    judge_layouts(g, SLICES, 256, 128, "kept")


@check("other windows and kept parts, as predict_slice and predict_tiled use for other models: "
       "64 / 32, 32 / 16, 16 / 16, 64 / 48")
def layout_other_windows(g):
    sizes = [(100, 70), (257, 129), (31, 97), (16, 16), (5, 40)]
    for window, keep in [(64, 32), (32, 16), (16, 16), (64, 48)]:
        for part in ("padding", "window", "kept"):
            judge_layouts(g, sizes, window, keep, part)


@check("_axis_layout: one axis as (pad_before, pad_after) and, per window, (window start, kept start, kept "
       "end)")
def layout_one_axis(g):
    for window, keep in [(256, 128), (32, 16)]:
        sizes = SIDES if window == 256 else [1, 15, 16, 17, 40, 48]
        got = g.run(axis_layouts, where=f"sizes {sizes[0]} to {sizes[-1]}, window={window}, keep={keep}",
                    sizes=sizes, window=window, keep=keep)["result"]
        for size, answer, want in zip(sizes, got, g.expect(axis_reference_all, sizes, window, keep)):
            assert as_ints(answer) == as_ints(want), \
                f"_axis_layout on size={size}, window={window}, keep={keep}: {answer}, expected " \
                f"{as_ints(want)}"


@check("predict_tiled of the identity gives the slice back exactly (any size, other windows too)")
def layout_round_trip(g):
    for H, W, window, keep in [(384, 256, 256, 128), (320, 333, 256, 128), (50, 70, 256, 128),
                               (100, 70, 64, 32), (31, 97, 32, 8), (40, 33, 16, 16)]:
        image = np.random.default_rng(H).random((H, W), dtype=np.float32)
        out = g.run(stitch_identity, where=f"a {H}x{W} slice, window={window}, keep={keep}", image=image,
                    window=window, keep=keep)["result"]
        close(out, image, "round trip", f"a {H}x{W} slice, window={window}, keep={keep}")


@check("sides drawn at random from 1 to 2000", hidden=True)
def layout_random_sides(g):
    sides = np.random.default_rng(8).integers(1, 2001, (12, 2)).tolist()
    for part in ("padding", "window", "kept"):
        judge_layouts(g, [tuple(s) for s in sides], 256, 128, part)
