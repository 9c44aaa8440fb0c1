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
