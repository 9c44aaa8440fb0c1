"""The thesis's own numbers, table by table, that the programs print beside ours.

Thesis: Table 5.1 (ablation, Lucchi), Table 5.2 (initial filters of UNETR-2D Base, Lucchi++), Table 5.4
(every network on Lucchi++ and Kasthuri++: parameters, IoU_F, inference time), Table 5.5 (denoising
pretexts, Lucchi++) and App. A Table 1 (cross-data-set adaptation, Table A.1 here). Every IoU_F is the
mean ± std of 10 runs as printed; parameters are in millions; inference is ms per 256x256 patch on the
thesis's RTX 3090. Each table is one name here; tests/test_thesis_numbers.py compares every entry with
the thesis text, where it is at hand. Nothing else in the project writes these numbers down. Table 5.4
trains every network at its best initial filters, which models.ARCHS holds.
"""
import models

# Table 5.1 (Lucchi test set, IoU_F): rows in the thesis's order, each adding one §5.1.1 component.
TABLE_5_1 = {
    "unet": {"baseline": "0.739 ± 0.002", "da": "0.871 ± 0.004", "batch-norm": "0.869 ± 0.002",
             "dropout": "0.881 ± 0.002", "elu": "0.881 ± 0.002", "he-normal": "0.881 ± 0.003",
             "attention-gates": "0.884 ± 0.002"},
    "unetr2d": {"baseline": "0.462 ± 0.024", "da": "0.774 ± 0.012", "batch-norm": "0.824 ± 0.011",
                "dropout": "0.819 ± 0.008", "elu": "0.813 ± 0.010", "he-normal": "0.829 ± 0.017",
                "attention-gates": "0.788 ± 0.014"},
}

# Table 5.2 (Lucchi++ test set): UNETR-2D Base by initial filters F.
TABLE_5_2 = {
    8: {"iou": "0.822 ± 0.022", "params": 44.7, "ms": "6.5 ± 7.5"},
    16: {"iou": "0.846 ± 0.008", "params": 45.6, "ms": "6.8 ± 7.7"},
    32: {"iou": "0.853 ± 0.010", "params": 48.7, "ms": "7.4 ± 7.7"},
    64: {"iou": "0.850 ± 0.014", "params": 60.2, "ms": "10 ± 7.4"},
}

# Table 5.4: each network with its best settings (the U-Net family at F = 16, UNETR/YNETR at F = 32),
# keyed (arch, size); the thesis's row names, in its order.
LABELS_5_4 = {
    ("unet", None): "2D U-Net [34]", ("attention_unet", None): "2D Attention U-Net [34]",
    ("unetr2d", "mini"): "UNETR-2D Mini (ours)", ("unetr2d", "small"): "UNETR-2D Small (ours)",
    ("unetr2d", "base"): "UNETR-2D Base (ours)", ("ynetr2d", "mini"): "YNETR-2D Mini (ours)",
    ("ynetr2d", "small"): "YNETR-2D Small (ours)", ("ynetr2d", "base"): "YNETR-2D Base (ours)",
}
PARAMS_5_4 = {("unet", None): 1.95, ("attention_unet", None): 1.99, ("unetr2d", "mini"): 4.24,
              ("unetr2d", "small"): 9.34, ("unetr2d", "base"): 48.7, ("ynetr2d", "mini"): 10.3,
              ("ynetr2d", "small"): 15.4, ("ynetr2d", "base"): 54.7}
TABLE_5_4 = {  # data set -> (arch, size) -> (IoU_F, inference ms)
    "lucchi": {("unet", None): ("0.903 ± 0.007", "2.9 ± 1.1"),
               ("attention_unet", None): ("0.906 ± 0.003", "2.9 ± 1.1"),
               ("unetr2d", "mini"): ("0.861 ± 0.008", "4.7 ± 3.8"),
               ("unetr2d", "small"): ("0.857 ± 0.010", "5.4 ± 4.8"),
               ("unetr2d", "base"): ("0.853 ± 0.010", "7.4 ± 7.7"),
               ("ynetr2d", "mini"): ("0.880 ± 0.024", "5.3 ± 4.9"),
               ("ynetr2d", "small"): ("0.894 ± 0.009", "6.1 ± 5.8"),
               ("ynetr2d", "base"): ("0.892 ± 0.013", "8.4 ± 7.2")},
    "kasthuri": {("unet", None): ("0.910 ± 0.002", "2.5 ± 0.9"),
                 ("attention_unet", None): ("0.910 ± 0.001", "2.5 ± 0.9"),
                 ("unetr2d", "mini"): ("0.886 ± 0.004", "3.9 ± 3.3"),
                 ("unetr2d", "small"): ("0.888 ± 0.003", "4.6 ± 3.8"),
                 ("unetr2d", "base"): ("0.887 ± 0.004", "6.7 ± 5.4"),
                 ("ynetr2d", "mini"): ("0.917 ± 0.003", "4.5 ± 4.5"),
                 ("ynetr2d", "small"): ("0.916 ± 0.001", "5.2 ± 4.7"),
                 ("ynetr2d", "base"): ("0.915 ± 0.002", "7.5 ± 6.1")},
}
DATASETS_5_4 = {"lucchi": "Lucchi++", "kasthuri": "Kasthuri++"}

# Table 5.5 (Lucchi++ test set, UNETR-2D Base): (degradation, thesis name, difference, IoU_F) in its order.
TABLE_5_5 = [(None, "None - Baseline", "", "0.852 ± 0.015"),
             ("pixel_dropout", "Pixel dropout", "+0.009", "0.861 ± 0.011"),
             ("cutout", "Cutout", "+0.015", "0.867 ± 0.010"),
             ("defocus_blur", "Defocus blur", "+0.015", "0.867 ± 0.008"),
             ("gaussian_noise", "Additive Gaussian Noise", "+0.019", "0.871 ± 0.012"),
             ("salt_pepper", "Coarse salt and pepper", "+0.020", "0.872 ± 0.008"),
             ("gaussian_blur", "Gaussian filter", "+0.021", "0.873 ± 0.009"),
             ("motion_blur", "Motion blur", "+0.022", "0.874 ± 0.005"),
             ("low_resolution", "Low resolution emulation", "+0.024", "0.876 ± 0.007")]

# App. A Table 1 (Table A.1 here): IoU_F on the target's test set,
# (Lucchi++ -> Kasthuri++, Kasthuri++ -> Lucchi++).
TABLE_A1 = {
    "unetr2d_base": ("UNETR-2D Base", "0.023 ± 0.025", "0.060 ± 0.027"),
    "attention_unet": ("2D Attention U-Net", "0.017 ± 0.008", "0.000 ± 0.000"),
    "attention_unet_clahe": ("2D Attention U-Net + CLAHE", "0.620 ± 0.051", "0.433 ± 0.085"),
    "attention_unet_hm": ("2D Attention U-Net + HM", "0.679 ± 0.043", "0.268 ± 0.048"),
    "attention_ynet_hm": ("2D Attention Y-Net + HM", "0.668 ± 0.020", "0.704 ± 0.045"),
    "damt_net": ("DAMT-Net [65] (not reimplemented here)", "0.279 ± 0.078", "0.569 ± 0.088"),
}


def params(arch, size, filters):
    """Parameters (millions) the thesis reports for this network, or None: Table 5.4 at the arch's own
    filters, Table 5.2 for UNETR-2D Base at other F."""
    if filters == models.ARCHS[arch]["filters"] and (arch, size) in PARAMS_5_4:
        return PARAMS_5_4[(arch, size)]
    if (arch, size) == ("unetr2d", "base") and filters in TABLE_5_2:
        return TABLE_5_2[filters]["params"]
    return None


def inference_ms(arch, size, filters, dataset="lucchi"):
    """Inference time per 256x256 patch (ms, mean ± std) as Table 5.4 or 5.2 prints it, or None."""
    if filters == models.ARCHS[arch]["filters"] and (arch, size) in TABLE_5_4[dataset]:
        return TABLE_5_4[dataset][(arch, size)][1]
    if (arch, size) == ("unetr2d", "base") and filters in TABLE_5_2 and dataset == "lucchi":
        return TABLE_5_2[filters]["ms"]
    return None


def iou_5_4(dataset, arch, size):
    """Test IoU_F of Table 5.4 for a data set named in `dataset` ("lucchi", "Lucchi++", ...), or None."""
    for key, table in TABLE_5_4.items():
        if key in dataset.lower() and (arch, size) in table:
            return key, table[(arch, size)][0]
    return None
