"""evaluate.py: IoU_F and Dice (Eq. 4.1-4.2) on hand-made masks, per slice and pooled; the same
prediction path for training and inference."""
import numpy as np
import pytest

import evaluate

pytestmark = pytest.mark.ex9


def test_iou_and_dice_on_hand_made_masks():
    mask = np.zeros((4, 4), bool)
    mask[0, :4] = True                       # 4 foreground pixels
    pred = np.zeros((4, 4), bool)
    pred[0, 1:4] = True                      # 3 of them found ...
    pred[1, 0:3] = True                      # ... and 3 false positives
    assert evaluate.confusion(pred, mask) == (3, 3, 1)
    assert evaluate.iou_foreground(pred, mask) == pytest.approx(3 / 7)
    assert evaluate.dice_coefficient(pred, mask) == pytest.approx(6 / 10)
    empty = np.zeros((4, 4), bool)
    assert evaluate.iou_foreground(empty, empty) == 1.0 and evaluate.dice_coefficient(empty, empty) == 1.0
    assert evaluate.iou_foreground(empty, mask) == 0.0 and evaluate.iou_foreground(mask, empty) == 0.0
    assert evaluate.iou_foreground(mask, mask) == 1.0


def test_per_slice_mean_differs_from_pooled_iou():
    big = np.zeros((10, 10), bool)
    big[:5] = True                           # 50 px, predicted perfectly
    small = np.zeros((10, 10), bool)
    small[0, 0:2] = True                     # 2 px, one found
    found = small.copy()
    found[0, 1] = False
    probs = [big.astype(np.float32), found.astype(np.float32)]
    r = evaluate.evaluate_stack(probs, [big, small])
    assert r["test_iou_f"] == pytest.approx((1.0 + 0.5) / 2)
    assert r["test_iou_f_global"] == pytest.approx(51 / 52)
    assert r["test_dice"] == pytest.approx((1.0 + 2 / 3) / 2)
    assert r["test_dice_global"] == pytest.approx(2 * 51 / (2 * 51 + 1))


def test_overlay_blends_each_region_half_grey_half_its_colour():
    """Against a float64 blend: true positives green, false positives red, false negatives blue, the
    rest the slice's grey; without a mask, predicted mitochondria green. uint8 throughout."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (9, 11), dtype=np.uint8)
    prob = rng.random((9, 11)).astype(np.float32)
    mask = rng.integers(0, 2, (9, 11)) * 255
    pred, truth = prob > 0.5, mask > 0
    for m, regions in [(mask, [(pred & truth, (0, 200, 0)), (pred & ~truth, (230, 0, 0)),
                               (~pred & truth, (0, 90, 255))]),
                       (None, [(pred, (0, 200, 0))])]:
        expected = np.repeat(image[..., None], 3, axis=2).astype(np.float64)
        for region, colour in regions:
            expected[region] = np.floor(0.5 * expected[region] + 0.5 * np.array(colour, np.float64))
        got = evaluate.overlay(image, prob, m)
        assert got.dtype == np.uint8 and np.array_equal(got, expected.astype(np.uint8))
        rest = ~np.any([r for r, _ in regions], axis=0)  # no region: the slice's grey
        assert np.array_equal(got[rest], np.repeat(image[..., None], 3, axis=2)[rest])
