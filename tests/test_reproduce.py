"""reproduce.py: a tiny table has the thesis's rows, columns and numbers; cells are reused, retrained
one by one and extended by seed; Table 5.1's rows keep and discard components as §5.1.1; Table 5.5
pre-trains before it fine-tunes; A1 hands over to adapt.py; bad input stops with exit code 2."""
import inspect
import json
import os

import pytest

import degrade
import reproduce
import train
import unet
import unetr2d

TINY = ["--tile", "32", "--image-side", "64", "--train-images", "4", "--test-images", "2", "--batch-size", "4",
        "--filters", "4"]


def _table(path):
    """The markdown table of table_*.md as a list of rows of cells (header first)."""
    lines = [line for line in path.read_text().splitlines() if line.startswith("|") and not line.startswith("|---")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_tiny_table_has_thesis_numbers_reuses_retrains_and_extends_cells(tmp_path, monkeypatch, capsys, one_thread):
    monkeypatch.setattr(reproduce, "QUICK", TINY)  # after the row's flags, so --filters 4 wins
    trained, real_main = [], train.main
    monkeypatch.setattr(train, "main", lambda argv: trained.append(argv[argv.index("--out") + 1]) or real_main(argv))
    command = lambda epochs=1, repeats=1: ["5.4", "--quick", "--rows", "unet,unetr2d-mini", "--epochs", str(epochs),  # noqa: E731
                                           "--repeats", str(repeats), "--device", "cpu", "--out", str(tmp_path),
                                           "--drop-last"]
    argv = command()
    cell = lambda row, seed: os.path.join(str(tmp_path), "5.4", "synthetic", row, f"seed-{seed}")  # noqa: E731

    reproduce.main(argv)
    assert sorted(trained) == [cell("unet", 0), cell("unetr2d-mini", 0)]
    table = _table(tmp_path / "table_5.4.md")
    assert table[0] == ["Dataset", "Model", "Params (ours)", "Params (thesis)", "IoU_F (ours)", "IoU_F (thesis)",
                        "ms (ours)", "ms (thesis)"]
    rows = {r[1]: r for r in table[1:]}
    assert list(rows) == ["2D U-Net [34]", "2D Attention U-Net [34]", "UNETR-2D Mini (ours)", "UNETR-2D Small (ours)",
                          "UNETR-2D Base (ours)", "YNETR-2D Mini (ours)", "YNETR-2D Small (ours)", "YNETR-2D Base (ours)"]
    # The thesis's Table 5.4 (Lucchi++), as printed there.
    assert rows["2D U-Net [34]"][3::2] == ["1.95M", "0.903 ± 0.007", "2.9 ± 1.1"]
    assert rows["UNETR-2D Mini (ours)"][3::2] == ["4.24M", "0.861 ± 0.008", "4.7 ± 3.8"]
    assert rows["YNETR-2D Base (ours)"][3::2] == ["54.7M", "0.892 ± 0.013", "8.4 ± 7.2"]
    # Ours: the trained cells' own numbers; the rows not asked for stay empty.
    for label, row, model in (("2D U-Net [34]", "unet", unet.UNet(filters=4)),
                              ("UNETR-2D Mini (ours)", "unetr2d-mini", unetr2d.UNETR2D("mini", 4, img_size=32))):
        with open(os.path.join(cell(row, 0), "results.json")) as f:
            result = json.load(f)
        assert rows[label][2] == f"{sum(p.numel() for p in model.parameters()) / 1e6:.3g}M"
        assert rows[label][4] == f"{result['test_iou_f']:.3f}"
    assert rows["UNETR-2D Base (ours)"][2::2] == ["—", "—", "—"]
    first = (tmp_path / "table_5.4.json").read_text()
    assert [len(r["runs"]) for r in json.loads(first)["rows"]] == [1, 0, 1, 0, 0, 0, 0, 0]
    assert not os.path.exists(os.path.join(cell("unet", 0), "last.pt"))  # --drop-last: pruned once finished

    trained.clear()
    reproduce.main(argv)  # everything is finished: nothing trains, the same table comes back
    assert trained == [] and (tmp_path / "table_5.4.json").read_text() == first

    os.remove(os.path.join(cell("unetr2d-mini", 0), "results.json"))
    reproduce.main(argv)
    assert trained == [cell("unetr2d-mini", 0)]

    trained.clear()
    reproduce.main(command(repeats=2))  # seed 1 of each row, nothing else
    assert sorted(trained) == [cell("unet", 1), cell("unetr2d-mini", 1)]
    rows = {r[1]: r for r in _table(tmp_path / "table_5.4.md")[1:]}
    assert " ± " in rows["2D U-Net [34]"][4]

    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:  # another protocol in the same --out would mix two in one table
        reproduce.main(command(epochs=2, repeats=2))
    assert exc.value.code == 2 and "epochs" in capsys.readouterr().err


def _settings(flags):
    a = train.parse_args(flags)
    dropout = a.dropout[0] if len(a.dropout) == 1 else tuple(a.dropout)
    return {"augment": a.augment, "batch_norm": a.batch_norm, "dropout": dropout, "activation": a.activation,
            "init": a.init, "attention_gates": bool(a.attention_gates)}


def _defaults(cls):
    params = inspect.signature(cls).parameters
    return {k: params[k].default for k in ("batch_norm", "dropout", "activation", "init")}


def test_table_5_1_keeps_and_discards_components_as_the_thesis():
    rows = {r.key: r for r in reproduce.rows_5_1(["lucchi"])["lucchi"]}
    baseline = {"augment": False, "batch_norm": False, "dropout": 0.0, "activation": "relu", "init": "glorot_uniform",
                "attention_gates": False}
    for arch in ("unet", "unetr2d"):
        assert _settings(rows[f"{arch}/baseline"].flags) == baseline
    # U-Net: batch norm is tried and dropped (★); its "+ He normal" row is the best U-Net of [34], unet.py's defaults.
    assert _settings(rows["unet/batch-norm"].flags)["batch_norm"] is True
    best_unet = _settings(rows["unet/he-normal"].flags)
    assert best_unet == {**_defaults(unet.UNet), "augment": True, "attention_gates": False}
    assert _settings(rows["unet/attention-gates"].flags) == {**best_unet, "attention_gates": True}
    # UNETR-2D: dropout, ELU and gates are dropped (◆); batch norm and He normal stay: unetr2d.py's defaults.
    assert _settings(rows["unetr2d/elu"].flags) == {**baseline, "augment": True, "batch_norm": True, "activation": "elu"}
    best_unetr = _settings(rows["unetr2d/he-normal"].flags)
    assert best_unetr == {**_defaults(unetr2d.UNETR2D), "augment": True, "attention_gates": False}
    # Table 5.1 as printed in the thesis.
    assert [rows[f"unet/{k}"].thesis["iou"] for k in ("baseline", "batch-norm", "attention-gates")] == [
        "0.739 ± 0.002", "0.869 ± 0.002", "0.884 ± 0.002"]
    assert [rows[f"unetr2d/{k}"].thesis["iou"] for k in ("baseline", "he-normal", "attention-gates")] == [
        "0.462 ± 0.024", "0.829 ± 0.017", "0.788 ± 0.014"]


def test_table_5_5_pretrains_then_fine_tunes_and_reports_the_difference(tmp_path, monkeypatch):
    calls = []

    def fake_cell(folder, flags, seed, opts):
        calls.append((folder, flags))
        return {"test_mse": 0.01, "test_iou_f": 0.5 if "baseline" in folder else 0.6, "params": 1, "device": "cpu",
                "inference_ms_per_patch": 1.0, "inference_ms_std": 0.0, "inference_patch": 32, "arch": "unetr2d"}

    monkeypatch.setattr(reproduce, "run_cell", fake_cell)
    opts = reproduce.parse_args(["5.5", "--quick", "--rows", "baseline,low_resolution", "--repeats", "1",
                                 "--out", str(tmp_path)])
    results = reproduce.run_table("5.5", opts)
    (pre_folder, pre_flags), (fine_folder, fine_flags) = calls[1:]
    assert pre_folder.endswith(os.path.join("low_resolution-pretrain", "seed-0"))
    assert pre_flags[pre_flags.index("--pretext") + 1] == "low_resolution"
    assert "--pretext" not in fine_flags and fine_flags[fine_flags.index("--init") + 1] == os.path.join(pre_folder, "best.pt")
    assert fine_folder.endswith(os.path.join("low_resolution", "seed-0"))
    table, _ = reproduce.format_table("5.5", results, opts)
    lines = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert "(+0.100) 0.600" in lines["Low resolution emulation"] and "(+0.024) 0.876 ± 0.007" in lines[
        "Low resolution emulation"]
    names = [r.key for r in reproduce.rows_5_5(["x"])["x"]]
    assert names[0] == "baseline" and sorted(names[1:]) == sorted(degrade.DEGRADATIONS)


def test_a1_hands_over_to_adapt_and_bad_input_exits_2(tmp_path, monkeypatch, capsys):
    script = tmp_path / "adapt.py"
    script.write_text("import json, sys\njson.dump(sys.argv[1:], open(sys.argv[-1], 'w'))\nsys.exit(3)\n")
    monkeypatch.setattr(reproduce, "ADAPT", str(script))
    record = str(tmp_path / "argv.json")
    with pytest.raises(SystemExit) as exc:
        reproduce.main(["A1", "--quick", "--data", "X", "--data2", "Y", "--repeats", "2", record])
    assert exc.value.code == 3 and json.load(open(record)) == ["--table", "--source", "X", "--target", "Y",
                                                               "--repeats", "2", record]
    monkeypatch.setattr(reproduce, "ADAPT", str(tmp_path / "missing.py"))
    for argv in (["A1"], ["5.4", "--quick", "--data", str(tmp_path)], ["5.2"], ["5.4", "--quick", "--rows", "vit"],
                 ["5.1", "--data", str(tmp_path / "nowhere")], ["5.5", "--data", str(tmp_path), "--data2", str(tmp_path)]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            reproduce.main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
