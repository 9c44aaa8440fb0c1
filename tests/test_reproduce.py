"""reproduce.py: a tiny table has the thesis's rows, columns and numbers; cells are reused, retrained
one by one and extended by seed; Table 5.1's rows keep and discard components as §5.1.1; Table 5.5
pre-trains before it fine-tunes; A1 runs adapt.table with the flags it understands; bad input stops with
exit code 2."""
import inspect
import json
import os

import pytest

import adapt
import degrade
import presets
import reproduce
import runs
import train
import unet
import unetr2d

TINY = {"tile": 32, "image_side": 64, "train_images": 4, "test_images": 2, "batch_size": 4, "filters": 4}


def _table(path):
    """The markdown table of table_*.md as a list of rows of cells (header first)."""
    lines = [line for line in path.read_text().splitlines()
             if line.startswith("|") and not line.startswith("|---")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_tiny_table_has_thesis_numbers_reuses_retrains_and_extends_cells(tmp_path, monkeypatch, capsys,
                                                                          one_thread):
    real_make, real_train = runs.make_config, train.train_run
    monkeypatch.setattr(runs, "make_config", lambda *a, **k: real_make(*a, **{**k, **TINY}))  # tiny cells
    trained = []
    monkeypatch.setattr(train, "train_run",
                        lambda run, s, d, out, **k: trained.append(out) or real_train(run, s, d, out, **k))
    command = lambda epochs=1, repeats=1: ["5.4", "--quick", "--rows", "unet,unetr2d-mini",  # noqa: E731
                                           "--epochs", str(epochs), "--repeats", str(repeats),
                                           "--device", "cpu", "--out", str(tmp_path), "--drop-last"]
    argv = command()
    cell = lambda row, seed: os.path.join(str(tmp_path), "5.4", "synthetic", row,  # noqa: E731
                                          f"seed-{seed}")

    reproduce.main(argv)
    assert sorted(trained) == [cell("unet", 0), cell("unetr2d-mini", 0)]
    table = _table(tmp_path / "table_5.4.md")
    assert table[0] == ["Dataset", "Model", "Params (ours)", "Params (thesis)", "IoU_F (ours)",
                        "IoU_F (thesis)", "ms (ours)", "ms (thesis)"]
    rows = {r[1]: r for r in table[1:]}
    assert list(rows) == ["2D U-Net [34]", "2D Attention U-Net [34]", "UNETR-2D Mini (ours)",
                          "UNETR-2D Small (ours)", "UNETR-2D Base (ours)", "YNETR-2D Mini (ours)",
                          "YNETR-2D Small (ours)", "YNETR-2D Base (ours)"]
    # The thesis's Table 5.4 (Lucchi++), as printed there.
    assert rows["2D U-Net [34]"][3::2] == ["1.95M", "0.903 ± 0.007", "2.9 ± 1.1"]
    assert rows["UNETR-2D Mini (ours)"][3::2] == ["4.24M", "0.861 ± 0.008", "4.7 ± 3.8"]
    assert rows["YNETR-2D Base (ours)"][3::2] == ["54.7M", "0.892 ± 0.013", "8.4 ± 7.2"]
    # Ours: the trained cells' own numbers; the rows not asked for stay empty.
    for label, row, model in (("2D U-Net [34]", "unet", unet.UNet(filters=4)),
                              ("UNETR-2D Mini (ours)", "unetr2d-mini",
                               unetr2d.UNETR2D("mini", 4, img_size=32))):
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


def _settings(row):
    run = runs.make_config(preset="thesis", **row.settings)
    return {"augment": run.augment, "batch_norm": run.batch_norm, "dropout": run.dropout,
            "activation": run.activation, "init": run.init, "attention_gates": bool(run.attention_gates)}


def _defaults(cls):
    params = inspect.signature(cls).parameters
    return {k: params[k].default for k in ("batch_norm", "dropout", "activation", "init")}


def test_table_5_1_keeps_and_discards_components_as_the_thesis():
    rows = {r.key: r for r in reproduce.rows_5_1(["lucchi"])["lucchi"]}
    baseline = {"augment": False, "batch_norm": False, "dropout": 0.0, "activation": "relu",
                "init": "glorot_uniform", "attention_gates": False}
    for arch in ("unet", "unetr2d"):
        assert _settings(rows[f"{arch}/baseline"]) == baseline
    # U-Net: batch norm is tried and dropped (★); its "+ He normal" row is the best U-Net of [34],
    # unet.py's defaults.
    assert _settings(rows["unet/batch-norm"])["batch_norm"] is True
    best_unet = _settings(rows["unet/he-normal"])
    assert best_unet == {**_defaults(unet.UNet), "augment": True, "attention_gates": False}
    assert _settings(rows["unet/attention-gates"]) == {**best_unet, "attention_gates": True}
    # UNETR-2D: dropout, ELU and gates are dropped (◆); batch norm and He normal stay: unetr2d.py's
    # defaults.
    assert _settings(rows["unetr2d/elu"]) == {**baseline, "augment": True, "batch_norm": True,
                                              "activation": "elu"}
    best_unetr = _settings(rows["unetr2d/he-normal"])
    assert best_unetr == {**_defaults(unetr2d.UNETR2D), "augment": True, "attention_gates": False}
    # Table 5.1 as printed in the thesis.
    assert [rows[f"unet/{k}"].thesis["iou"] for k in ("baseline", "batch-norm", "attention-gates")] == [
        "0.739 ± 0.002", "0.869 ± 0.002", "0.884 ± 0.002"]
    assert [rows[f"unetr2d/{k}"].thesis["iou"] for k in ("baseline", "he-normal", "attention-gates")] == [
        "0.462 ± 0.024", "0.829 ± 0.017", "0.788 ± 0.014"]


def test_table_5_5_pretrains_then_fine_tunes_and_reports_the_difference(tmp_path, monkeypatch):
    calls = []

    def fake_cell(folder, settings, opts, device):
        calls.append((folder, settings))
        return {"test_mse": 0.01, "test_iou_f": 0.5 if "baseline" in folder else 0.6, "params": 1,
                "device": "cpu", "inference_ms_per_patch": 1.0, "inference_ms_std": 0.0,
                "inference_patch": 32, "arch": "unetr2d"}

    monkeypatch.setattr(reproduce, "run_cell", fake_cell)
    opts = reproduce.parse_args(["5.5", "--quick", "--rows", "baseline,low_resolution", "--repeats", "1",
                                 "--out", str(tmp_path)])
    results = reproduce.run_table("5.5", opts)
    (pre_folder, pre), (fine_folder, fine) = calls[1:]
    assert pre_folder.endswith(os.path.join("low_resolution-pretrain", "seed-0"))
    assert pre["pretext"] == "low_resolution"
    assert "pretext" not in fine and fine["init_from"] == os.path.join(pre_folder, "best.pt")
    assert fine_folder.endswith(os.path.join("low_resolution", "seed-0"))
    table = reproduce.markdown(*reproduce.format_5_5(results)[:2])
    lines = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert "(+0.100) 0.600" in lines["Low resolution emulation"] and "(+0.024) 0.876 ± 0.007" in lines[
        "Low resolution emulation"]
    names = [r.key for r in reproduce.rows_5_5(["x"])["x"]]
    assert names[0] == "baseline" and sorted(names[1:]) == sorted(degrade.DEGRADATIONS)


def test_a1_runs_adapt_table_with_the_flags_it_understands_and_bad_input_exits_2(tmp_path, monkeypatch,
                                                                                  capsys):
    seen = []
    monkeypatch.setattr(adapt, "table", lambda opts: seen.append(opts) or {})
    reproduce.main(["A1", "--quick", "--repeats", "2", "--rows", "attention_unet_hm", "--drop-last", "--out",
                    str(tmp_path)])
    opts, = seen
    assert (opts.source, opts.light, opts.repeats, opts.rows, opts.drop_last, opts.out) == \
        (None, True, 2, ("attention_unet_hm",), True, os.path.join(str(tmp_path), "A1"))
    for d in ("L", "K"):
        os.makedirs(tmp_path / d)
    reproduce.main(["A1", "--data", str(tmp_path / "L"), "--data2", str(tmp_path / "K"), "--out",
                    str(tmp_path)])
    assert (seen[1].source, seen[1].target, seen[1].light, seen[1].repeats) == \
        (str(tmp_path / "L"), str(tmp_path / "K"), False, reproduce.THESIS_REPEATS)
    for argv, expected in ((["A1"], "--data"), (["A1", "--quick", "--epochs", "3"], "--epochs"),
                           (["A1", "--quick", "--rows", "damt_net"], "damt_net"),
                           (["5.4", "--quick", "--data", str(tmp_path)], "--quick"), (["5.2"], "--data"),
                           (["5.4", "--quick", "--rows", "vit"], "vit"),
                           (["5.1", "--data", str(tmp_path / "nowhere")], "nowhere"),
                           (["5.5", "--data", str(tmp_path), "--data2", str(tmp_path)], "--data2"),
                           (["5.4", "--quick", "--epochs", "-1"], "--epochs")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            reproduce.main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert expected in err, (argv, err)
    assert len(seen) == 2


def test_quick_cells_run_the_quick_preset_with_the_rows_settings():
    opts = reproduce.parse_args(["5.4", "--quick"])
    rows = {r.key: r for r in reproduce.rows_5_4(opts.names)["synthetic"]}
    run = runs.make_config(preset="quick", **rows["attention-unet"].settings)
    # filters and batch norm: the thesis's Attention U-Net
    assert (run.tile, run.fit.epochs, run.filters, run.batch_norm) == (presets.QUICK["tile"],
                                                                       presets.QUICK["epochs"], 16, False)
    assert runs.make_config(preset="quick", **rows["unetr2d-base"].settings).size == "base"
