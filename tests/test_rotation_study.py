"""rotation_study.py: bilinear rotation at any angle smooths a tile and the right-angle modes do not;
a cell trains through runs.py for the whole epochs nearest its step budget; mistakes exit 2."""
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import data
import rotation_study
import synthetic


def _write(root, n=4, side=64):
    for split, seed in (("train", 0), ("test", 1)):
        x, y = synthetic.synthetic_em(n if split == "train" else 2, side, side, seed=seed)
        for sub in ("x", "y"):
            os.makedirs(os.path.join(root, split, sub))
        for i in range(len(x)):
            Image.fromarray(x[i]).save(os.path.join(root, split, "x", f"{i}.png"))
            Image.fromarray(y[i] * 255).save(os.path.join(root, split, "y", f"{i}.png"))
    return root


def test_smoothing_table_tells_bilinear_from_exact_rotations():
    noise = np.random.default_rng(0).integers(0, 256, size=(6, 64, 64)).astype(np.uint8)
    rows = rotation_study.smoothing_table(noise, noise, tile=32)
    assert rows["test slices"] == pytest.approx(1.0, rel=1e-2)  # the same pixels, cut into tiles or not
    # ~2/3 of white noise survives
    assert rows["--rotation any"] < 0.7 and rows["bilinear at 45 degrees"] < 0.7
    assert rows["--rotation right"] > 0.95 and rows["--rotation any-nearest"] > 0.9
    assert rows["bilinear at 90 degrees"] == pytest.approx(1.0, abs=0.05)  # a quarter turn resamples nothing


def test_cells_train_for_the_whole_epochs_nearest_the_steps_and_write_their_table(tmp_path):
    root = _write(str(tmp_path / "set"))
    out = tmp_path / "study"
    record = rotation_study.main(["--data", root, "--cells", "thesis,loop", "--seeds", "1", "--steps", "10",
                                  "--tile", "32", "--filters", "4", "--batch-size", "4", "--out", str(out)])
    cells = {r["cell"]: r for r in record["runs"]}
    tiles = len(data.extract_tiles(np.zeros((4, 64, 64), np.uint8), 32))  # 16 tiles, 2 of them held out
    per_epoch = math.ceil((tiles - 2) / 4)
    assert cells["thesis"]["steps"] == round(10 / per_epoch) * per_epoch and cells["loop"]["steps"] == 10
    assert json.load(open(out / "study.json"))["runs"] == record["runs"]
    table = (out / "table.md").read_text()
    assert "| thesis |" in table and "| loop |" in table and "| crops |" not in table
    results = json.load(open(out / "thesis-seed0" / "results.json"))
    assert results["test_iou_f"] == cells["thesis"]["test_iou_f"] and results["run"]["rotation"] == "any"


@pytest.mark.parametrize("argv, expected", [(["--cells", "diagonal"], "--cells: unknown diagonal"),
                                            (["--steps", "0"], "--steps"), (["--out", "TAKEN"], "not empty")])
def test_mistakes_exit_2_with_one_line(tmp_path, capsys, argv, expected):
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    argv = [str(tmp_path / "taken") if a == "TAKEN" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        rotation_study.main(["--data", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and expected in err, err
    assert os.listdir(tmp_path / "taken") == ["notes.txt"]
