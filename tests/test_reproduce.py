"""reproduce.py: a tiny table has the thesis's rows, columns and numbers; cells are reused, retrained
one by one and extended by seed; Table 5.1's rows keep and discard components as §5.1.1; Table 5.5
pre-trains before it fine-tunes; Table A.1 is a table like the others, both directions, each cell scored
on its target; bad input stops with exit code 2."""
import concurrent.futures
import inspect
import json
import os
import pickle

import pytest
import torch

import adapt
import degrade
import predict
import presets
import reproduce
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
    real_make, real_train = presets.make_config, train.train_run
    monkeypatch.setattr(presets, "make_config", lambda *a, **k: real_make(*a, **{**k, **TINY}))  # tiny cells
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
    run = presets.make_config(preset="thesis", **row.settings)
    return {"augment": run.augment, "batch_norm": run.batch_norm, "dropout": run.dropout,
            "activation": run.activation, "init": run.init, "attention_gates": bool(run.attention_gates)}


def _defaults(cls):
    params = inspect.signature(cls).parameters
    return {k: params[k].default for k in ("batch_norm", "dropout", "activation", "init")}


def test_table_5_1_keeps_and_discards_components_as_the_thesis():
    request = reproduce.Request(table="5.1", data=("Lucchi",), names=("lucchi",), repeats=1)
    rows = {r.key: r for r in reproduce.rows_5_1(request)["lucchi"]}
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

    def fake_cell(folder, row, seed, request, device):
        calls.append((folder, row.settings))
        return {"test_mse": 0.01, "test_iou_f": 0.5 if "baseline" in folder else 0.6, "params": 1,
                "device": "cpu", "inference_ms_per_patch": 1.0, "inference_ms_std": 0.0,
                "inference_patch": 32, "arch": "unetr2d"}

    monkeypatch.setattr(reproduce, "run_cell", fake_cell)
    request = reproduce.parse_args(["5.5", "--quick", "--rows", "baseline,low_resolution", "--repeats", "1",
                                    "--out", str(tmp_path)])
    results = reproduce.run_table(request)
    (pre_folder, pre), (fine_folder, fine) = calls[1:]
    assert pre_folder.endswith(os.path.join("low_resolution-pretrain", "seed-0"))
    assert pre["pretext"] == "low_resolution"
    assert "pretext" not in fine and fine["init_from"] == os.path.join(pre_folder, "best.pt")
    assert fine_folder.endswith(os.path.join("low_resolution", "seed-0"))
    table = reproduce.markdown(*reproduce.format_5_5(results)[:2])
    lines = {line.split("|")[2].strip(): line for line in table.splitlines()[2:]}
    assert "(+0.100) 0.600" in lines["Low resolution emulation"] and "(+0.024) 0.876 ± 0.007" in lines[
        "Low resolution emulation"]
    names = [r.key for r in reproduce.rows_5_5(request)["synthetic"]]
    assert names[0] == "baseline" and sorted(names[1:]) == sorted(degrade.DEGRADATIONS)


def test_a1_is_a_table_of_both_directions_each_cell_scored_on_its_target(tmp_path, monkeypatch):
    trained, scored, adapted = [], [], []

    def fake_train_in(folder, run, device, drop_last=False):
        trained.append((folder, run))
        os.makedirs(folder, exist_ok=True)
        return {"out": folder, "run": {"fit": {"seed": run.fit.seed}}, "test_iou_f": 0.9}

    monkeypatch.setattr(reproduce.runs, "train_in", fake_train_in)
    monkeypatch.setattr(predict, "score_checkpoint",
                        lambda path, target, device: scored.append((path, target)) or {"test_iou_f": 0.25})
    monkeypatch.setattr(adapt, "adapt", lambda cfg, device, out, resume: adapted.append(cfg) or
                        os.makedirs(out) or {"test_iou_f": 0.75})
    reproduce.main(["A1", "--quick", "--jobs", "1", "--repeats", "2", "--out", str(tmp_path)])
    a, b = (str(tmp_path / "A1" / "data" / d) for d in ("a", "b"))
    assert sorted(os.listdir(a)) == ["test", "train"] and sorted(os.listdir(b)) == ["test", "train"]
    # 4 baselines x 2 directions x 2 seeds, each trained on its source with the light preset ...
    assert len(trained) == 16 and {(run.preset, run.threads) for _, run in trained} == {("light", 1)}
    hm = [run for folder, run in trained if os.path.join("a-to-b", "attention_unet_hm") in folder]
    assert [(r.data, r.match_to, r.preprocess, r.fit.seed) for r in hm] == [(a, b, "hist_match", 0),
                                                                          (a, b, "hist_match", 1)]
    assert {r.size for _, r in trained if r.arch == "unetr2d"} == {"mini"}  # Base costs ~50x at this size
    # ... and scored on its target's test split; the Y-Net cells run App. A's three stages.
    assert {t for _, t in scored} == {a, b} and len(scored) == 16
    assert [(c.source, c.target, c.seed, c.threads) for c in adapted] == [(a, b, 0, 1), (b, a, 0, 1),
                                                                          (a, b, 1, 1), (b, a, 1, 1)]
    table = _table(tmp_path / "table_A1.md")
    assert table[0][3:] == ["IoU_F (ours, a -> b)", "IoU_F (ours, b -> a)"]
    rows = {r[0]: r for r in table[1:]}
    assert rows["2D Attention U-Net + HM"][1:] == ["0.679 ± 0.043", "0.268 ± 0.048", "0.250 ± 0.000",
                                                   "0.250 ± 0.000"]
    assert rows["2D Attention Y-Net + HM"][3:] == ["0.750 ± 0.000", "0.750 ± 0.000"]
    assert rows["DAMT-Net [65] (not reimplemented here)"][3:] == ["n/a", "n/a"]
    # Finished cells are read back: their target.json keeps the score.
    trained.clear(), scored.clear(), adapted.clear()
    reproduce.main(["A1", "--quick", "--jobs", "1", "--repeats", "2", "--out", str(tmp_path)])
    assert scored == [] and adapted == [] and len(trained) == 16


def test_bad_table_arguments_exit_2_with_one_line(tmp_path, capsys):
    for argv, expected in ((["A1"], "--data"), (["A1", "--quick", "--epochs", "3"], "--epochs"),
                           (["A1", "--quick", "--rows", "damt_net"], "damt_net"),
                           (["A1", "--data", str(tmp_path)], "--data2"),
                           (["5.4", "--quick", "--data", str(tmp_path)], "--quick"), (["5.2"], "--data"),
                           (["5.4", "--quick", "--rows", "vit"], "vit"),
                           (["5.1", "--data", str(tmp_path / "nowhere")], "nowhere"),
                           (["5.5", "--data", str(tmp_path), "--data2", str(tmp_path)], "--data2"),
                           (["5.4", "--quick", "--epochs", "-1"], "--epochs")):
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            reproduce.main(argv + ["--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1, (argv, err)
        assert expected in err, (argv, err)


def test_quick_cells_run_the_quick_preset_with_the_rows_settings():
    request = reproduce.parse_args(["5.4", "--quick"])
    rows = {r.key: r for r in reproduce.rows_5_4(request)["synthetic"]}
    run = presets.make_config(preset="quick", **rows["attention-unet"].settings)
    # filters and batch norm: the thesis's Attention U-Net (the demo's BatchNorm is not taken over)
    assert (run.tile, run.fit.epochs, run.filters) == (presets.QUICK["tile"], presets.QUICK["epochs"], 16)
    network = train.build_network(run)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in network.modules())
    assert presets.make_config(preset="quick", **rows["unetr2d-base"].settings).size == "base"


class InlinePool:
    """The process pool of --jobs 2, in this process: what a worker would receive must pickle."""

    def __init__(self, jobs, seen, phase):
        self.seen, self.phase = seen, phase

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def submit(self, fn, request, group, log):
        pickle.dumps((fn, request))
        self.seen.append((group, sorted(os.listdir(os.path.join(request.out, "A1", "data")))))
        future, self.phase[0] = concurrent.futures.Future(), group
        future.set_result(fn(request, group, log))
        self.phase[0] = "parent"
        return future


def test_jobs_2_trains_each_group_in_its_own_process_after_the_domains_are_written(tmp_path, monkeypatch,
                                                                                    capsys):
    monkeypatch.setitem(presets.LIGHT, "train_images", 2)
    monkeypatch.setitem(presets.LIGHT, "test_images", 1)
    monkeypatch.setitem(presets.LIGHT, "image_side", 32)
    workers, cells, phase = [], [], ["parent"]
    monkeypatch.setattr(reproduce, "process_pool", lambda jobs: InlinePool(jobs, workers, phase))
    monkeypatch.setattr(reproduce, "run_cell", lambda folder, row, seed, request, device:
                        cells.append((phase[0], row.group)) or {"target_iou_f": 0.5, "seed": seed,
                                                                "out": folder})
    reproduce.main(["A1", "--quick", "--out", str(tmp_path)])  # --jobs 2 is A1 --quick's default
    assert workers == [("a-to-b", ["a", "b"]), ("b-to-a", ["a", "b"])]  # both domains there on arrival
    groups = lambda who: {g for p, g in cells if p == who}  # noqa: E731
    assert groups("a-to-b") == {"a -> b"} and groups("b-to-a") == {"b -> a"}
    assert groups("parent") == {"a -> b", "b -> a"}  # then the table reads every cell back
    assert len(os.listdir(tmp_path / "A1" / "data" / "a" / "train" / "y")) == 2

    def failing(*a):
        raise reproduce.cli.UsageError("a cell could not train")

    monkeypatch.setattr(reproduce, "run_cell", failing)
    with pytest.raises(SystemExit) as exit_info:
        reproduce.main(["A1", "--quick", "--out", str(tmp_path / "u")])
    assert exit_info.value.code == 2 and "a group of the table failed; see" in capsys.readouterr().err
    assert "a cell could not train" in (tmp_path / "u" / "A1-a-to-b.log").read_text()


def test_the_real_process_pool_runs_both_groups_and_keeps_their_logs(tmp_path):
    request = reproduce.Request(table="5.4", data=(str(tmp_path / "a"), str(tmp_path / "b")),
                                names=("a", "b"), repeats=1, rows=(), out=str(tmp_path / "t"), device="cpu",
                                jobs=2)
    reproduce.run_groups_apart(request, ["a", "b"])  # no rows: the workers start, find nothing, finish
    assert sorted(os.listdir(tmp_path / "t")) == ["5.4-a.log", "5.4-b.log"]
