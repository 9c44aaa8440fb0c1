"""thesis_numbers.py: every key the programs look up exists, and, where the thesis text is beside the
project, every number is the one printed in its table."""
import os
import re

import pytest

import models
import presets
import reproduce
import thesis_numbers as tn
import vit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
THESIS = os.path.join(ROOT, "..", "shared", "thesis.txt")


def test_every_network_the_programs_train_has_its_numbers():
    for arch, spec in models.ARCHS.items():
        if arch == "attention_ynet":
            continue  # App. A reports no parameters or time for it
        for size in (vit.CONFIGS if spec["sized"] else [None]):
            key = (arch, size)
            assert tn.params(arch, size, spec["filters"]) == tn.PARAMS_5_4[key]
            for dataset in tn.TABLE_5_4:
                assert tn.iou_5_4(dataset, arch, size)[1] == tn.TABLE_5_4[dataset][key][0]
                assert tn.inference_ms(arch, size, spec["filters"], dataset) == tn.TABLE_5_4[dataset][key][1]
            assert key in tn.LABELS_5_4
    for f in (8, 16, 32, 64):
        assert tn.params("unetr2d", "base", f) == tn.TABLE_5_2[f]["params"]
    assert tn.params("unet", None, 8) is None and tn.iou_5_4("vnc", "unet", None) is None


def test_every_table_row_of_reproduce_finds_the_thesis_numbers():
    for table, (rows, _) in reproduce.TABLES.items():
        data = ("Lucchi++", "Kasthuri++") if table in ("5.4", "A1") else ("Lucchi++",)
        plan = rows(reproduce.Request(table, data, reproduce.data_names(table, False, data), repeats=1))
        for data_rows in plan.values():
            for row in data_rows:
                assert row.thesis.get("iou"), (table, row.key)
    assert set(tn.TABLE_5_1) == {"unet", "unetr2d"} and len(tn.TABLE_5_5) == 9
    assert {d for d, *_ in tn.TABLE_5_5[1:]} <= set(__import__("degrade").DEGRADATIONS)
    assert set(presets.DEMO_ARCH) == set(models.ARCHS)


def _thesis():
    if not os.path.isfile(THESIS):
        pytest.skip("thesis.txt is not beside the project")
    with open(THESIS, encoding="utf-8") as f:
        text = f.read()
    for tag in ("$", "<b>", "</b>", "<math>", "</math>"):
        text = text.replace(tag, "")
    text = text.replace("\\pm", "±")
    return [re.sub(r"\s+", " ", line).strip() for line in text.splitlines()]


def _block(lines, first, caption):
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith(caption))
    return [line for line in lines[start:end] if line]


def _numbers(line):
    return re.findall(r"\d+(?:\.\d+)?(?: ?± ?\d+(?:\.\d+)?)?", line)


def _same(a, b):
    return a.replace(" ", "") == b.replace(" ", "")


def test_tables_5_1_and_5_2_match_the_thesis_text():
    lines = _thesis()
    block = _block(lines, "Baseline 0.739", "**Table 5.1:**")
    labels = {"baseline": "Baseline", "da": "+ DA", "batch-norm": "+ Batch norm.", "dropout": "+ Dropout",
              "elu": "+ ELU", "he-normal": "+ He normal", "attention-gates": "+ Attention Gates"}
    for key, label in labels.items():
        line = next(x for x in block if x.startswith(label + " "))
        unet, unetr = _numbers(line)[-2:]
        assert _same(unet, tn.TABLE_5_1["unet"][key]) and _same(unetr, tn.TABLE_5_1["unetr2d"][key]), line
    block = _block(lines, "N initial filters", "**Table 5.2:**")
    for f, row in tn.TABLE_5_2.items():
        line = next(x for x in block if x.startswith(f"{f} "))
        assert [row["iou"], f"{row['params']}", row["ms"]] == [n.replace("±", " ± ").replace("  ", " ")
                                                             for n in _numbers(line)[1:]], line


def test_table_5_4_matches_the_thesis_text():
    block = _block(_thesis(), "Dataset Model Params", "**Table 5.4:**")[1:]
    assert len(block) == 16
    for i, dataset in enumerate(tn.TABLE_5_4):
        for line, (key, label) in zip(block[8 * i:8 * i + 8], tn.LABELS_5_4.items()):
            assert label in line, (line, label)
            params, iou, ms = re.findall(r"[\d.]+M|\d+(?:\.\d+)? ± [\d.]+", line)
            assert params == f"{tn.PARAMS_5_4[key]}M" and (iou, ms) == tn.TABLE_5_4[dataset][key], line


def test_table_5_5_and_a1_match_the_thesis_text():
    lines = _thesis()
    block = _block(lines, "None - Baseline", "**Table 5.5:**")
    for (_, name, delta, iou), line in zip(tn.TABLE_5_5, block):
        assert name in line and iou in line and (not delta or f"({delta})" in line), line
    block = _block(lines, "UNETR-2D Base (ours) 0.023", "**Table 1:**")
    names = {"unetr2d_base": "UNETR-2D Base (ours)", "attention_unet": "2D Attention U-Net [34] 0",
             "attention_unet_clahe": "+ CLAHE", "attention_unet_hm": "2D Attention U-Net [34] + HM",
             "attention_ynet_hm": "Attention Y-Net + HM", "damt_net": "DAMT-Net [65]"}
    for key, (_, a, b) in tn.TABLE_A1.items():
        line = next(x for x in block if names[key] in x)
        assert [n.replace("±", " ± ") for n in _numbers(line)[-2:]] == [a, b], line
