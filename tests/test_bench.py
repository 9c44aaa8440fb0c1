"""bench.py's counts against torch's own FLOP counter and closed forms; the speed options of train.py
(fused attention, channels-last, bf16 autocast, torch.compile) against the plain eager fp32 path."""
import ctypes
import gc
import os
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

import bench
import distributed
import evaluate
import presets
import train
import unet
import unetr2d
import ynetr2d

TINY_MODELS = {
    "unetr2d": lambda **kw: unetr2d.UNETR2D("mini", filters=4, img_size=32, **kw),
    "ynetr2d": lambda **kw: ynetr2d.YNETR2D("mini", filters=4, img_size=32, **kw),
    "unet": lambda **kw: unet.UNet(filters=4, **kw),
    "attention_ynet": lambda **kw: unet.AttentionYNet(filters=4, **kw),
}


def _seg(out):
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", list(TINY_MODELS))
def test_mac_count_equals_torch_flop_counter(name, one_thread):
    torch.manual_seed(0)
    model = TINY_MODELS[name]().eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, 1, 32, 32))
    assert bench.count_macs(model, side=32) == counter.get_total_flops() // 2  # torch counts 2 FLOPs per MAC


def test_mac_count_closed_form():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ConvTranspose2d(3, 2, 2, stride=2),
                          nn.Conv2d(2, 4, 1, groups=2))
    # conv 16x16x3 outputs x 1 x 9; transpose: 16x16x3 inputs x 2 x 4; grouped 1x1: 32x32x4 outputs x 1 x 1
    assert bench.count_macs(model, side=16) == 16 * 16 * 3 * 9 + 16 * 16 * 3 * 2 * 4 + 32 * 32 * 4


def test_training_memory_counts_saved_activations_once_and_weights_four_times():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 1))
    x = torch.randn(7, 10)
    n_params = sum(p.numel() for p in model.parameters())
    tensors = lambda: sum(type(o) is torch.Tensor for o in gc.get_objects())  # noqa: E731
    gc.collect()  # garbage of earlier tests would otherwise be counted in `before` and freed later
    before = tensors()
    got = bench.training_memory_lower_bound(model, x, lambda m, x: m(x).sum())
    # saved: the input of the first Linear and the ReLU output (also the second Linear's input) in fp32
    assert got == 4 * (7 * 10 + 7 * 20) + 4 * 4 * n_params
    gc.collect()
    assert tensors() == before  # the step's graph is freed (a saved output must not hold its own graph)


@pytest.mark.parametrize("name", ["unetr2d", "ynetr2d"])
def test_fused_attention_model_matches_hand_written(name, one_thread):
    torch.manual_seed(1)
    no_dropout = {"vit_dropout": 0.0, "dropout": 0.0,
                  **({"spatial_dropout": 0.0} if name == "ynetr2d" else {})}
    hand = TINY_MODELS[name](**no_dropout)
    fused = TINY_MODELS[name](**no_dropout, fused_attention=True)
    fused.load_state_dict(hand.state_dict())
    assert all(block.attn.fused for block in fused.encoder.blocks)
    x = torch.rand(2, 1, 32, 32)
    for mode in ("eval", "train"):
        getattr(hand, mode)(), getattr(fused, mode)()
        out_hand, out_fused = hand(x), fused(x)
        torch.testing.assert_close(out_fused, out_hand, rtol=1e-5, atol=1e-5)
    out_hand.square().mean().backward()
    out_fused.square().mean().backward()
    for (key, p_hand), p_fused in zip(hand.named_parameters(), fused.parameters()):
        torch.testing.assert_close(p_fused.grad, p_hand.grad, rtol=1e-4, atol=1e-6, msg=key)
    # Attention maps still come from the hand-written path.
    maps = fused.encoder.attention_maps(x)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones_like(maps[0][..., 0]))


@pytest.mark.parametrize("name", ["unet", "unetr2d"])
def test_channels_last_and_bf16_keep_the_outputs(name, one_thread):
    torch.manual_seed(2)
    model = TINY_MODELS[name]().eval()
    x = torch.rand(2, 1, 32, 32)
    with torch.no_grad():
        reference = _seg(model(x))
        nhwc = model.to(memory_format=torch.channels_last)
        assert nhwc.head.weight.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(_seg(nhwc(x)), reference, rtol=1e-5, atol=1e-5)
        with evaluate.autocast(True, torch.device("cpu")):
            low = _seg(model(x))
    assert low.dtype == torch.bfloat16  # autocast did run in bf16 ...
    scale = reference.abs().max()
    # ... within its 8 bits
    torch.testing.assert_close(low.float(), reference, rtol=0, atol=0.05 * float(scale))


def test_train_flags_keep_the_curve(tmp_path, one_thread):
    tiny = ["--arch", "unet", "--filters", "4", "--dropout", "0", "--tile", "32", "--image-side", "64",
            "--train-images", "4", "--test-images", "1", "--batch-size", "4", "--epochs", "2",
            "--device", "cpu"]
    plain = train.main(tiny + ["--no-channels-last", "--out", str(tmp_path / "plain")])
    nhwc = train.main(tiny + ["--out", str(tmp_path / "nhwc")])  # the demo preset's default
    if not evaluate.bf16_supported(torch.device("cpu")):  # train.py refuses --amp here (test_train.py)
        pytest.skip("this CPU has no bf16 support")
    low = train.main(tiny + ["--no-channels-last", "--amp", "--out", str(tmp_path / "amp")])
    assert nhwc["run"]["channels_last"] and low["run"]["fit"]["amp"] and not plain["run"]["channels_last"]
    assert nhwc["best_val_loss"] == pytest.approx(plain["best_val_loss"], rel=1e-4)
    assert low["best_val_loss"] == pytest.approx(plain["best_val_loss"], rel=2e-2)
    assert low["best_val_loss"] != plain["best_val_loss"]  # bf16 really ran


def test_fused_attention_flag_reaches_the_model_and_is_refused_for_cnns(capsys):
    assert presets.make_config("unetr2d", fused_attention=True).model_kwargs["fused_attention"] is True
    assert "fused_attention" not in presets.make_config("unetr2d").model_kwargs
    with pytest.raises(SystemExit) as exit_info:
        train.main(["--arch", "unet", "--fused-attention", "--summary"])
    assert exit_info.value.code == 2
    assert "--fused-attention does not apply to --arch unet" in capsys.readouterr().err


@pytest.mark.skipif(not os.environ.get("TEST_COMPILE"), reason="torch.compile needs 15 s (eager backend) to "
                    "over 3 minutes (inductor) for a tiny UNETR-2D on 2 CPU cores; set TEST_COMPILE=1 to run "
                    "it")
def test_compiled_training_module_matches_eager(one_thread):
    torch.manual_seed(3)
    model = TINY_MODELS["unetr2d"](vit_dropout=0.0)
    net = distributed.training_module(model, torch.device("cpu"), compile=True)
    assert net is not model
    x = torch.rand(2, 1, 32, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), model(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("argv, expected", [(["--models", "vnet"], "--models: unknown model vnet"),
                                            (["--variants", "fp16"], "unknown option fp16"),
                                            (["--batch", "0"], "--batch"),
                                            (["--json", "EXISTING"], "already exists")])
def test_bench_mistakes_exit_2_with_one_line_and_keep_what_exists(tmp_path, capsys, argv, expected):
    existing = tmp_path / "bench.json"
    existing.write_text("{}")
    argv = [str(existing) if a == "EXISTING" else a for a in argv]
    with pytest.raises(SystemExit) as exit_info:
        bench.main(argv + ["--device", "cpu", "--models", "unet"] * ("--models" not in argv))
    err = capsys.readouterr().err
    assert (exit_info.value.code == 2 and err.startswith("error: ") and err.count("\n") == 1
            and expected in err), err
    assert existing.read_text() == "{}"


def test_importing_cli_makes_large_blocks_come_from_mallocs_heap_not_fresh_mappings():
    """With cli imported, a live 64 MiB array lies in malloc's heap, which keeps freed blocks for reuse;
    without it, glibc maps such a block afresh (mallinfo2's hblkhd: bytes in mapped blocks)."""
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc" or \
            not hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2"):
        pytest.skip("glibc's malloc only, 2.33 or later")
    probe = ("import ctypes, sys; sys.path.insert(0, {root!r}); {imp}\n"
             "import numpy as np\n"
             "class Info(ctypes.Structure): _fields_ = [(n, ctypes.c_size_t) for n in 'arena ordblks smblks "
             "hblks hblkhd usmblks fsmblks uordblks fordblks keepcost'.split()]\n"
             "libc = ctypes.CDLL('libc.so.6'); libc.mallinfo2.restype = Info\n"
             "block = np.ones(1 << 26, np.uint8)\n"
             "print(libc.mallinfo2().hblkhd)")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def mapped_bytes(imp):
        out = subprocess.run([sys.executable, "-c", probe.format(root=root, imp=imp)], capture_output=True,
                             text=True, check=True).stdout
        return int(out.split()[-1])

    assert mapped_bytes("import cli; assert cli.KEEPS_FREED_MEMORY") < 1 << 26
    assert mapped_bytes("") >= 1 << 26  # glibc's default, which cli changes
