"""Make the flat top-level modules importable from tests/ whatever the working directory."""
import os
import sys

import pytest

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as train.py: idle threads sleep, never spin
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread is faster and immune to a busy machine (used by the model tests)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def interrupt_epoch(monkeypatch):
    """interrupt_epoch(n): the n-th call of train.train_one_epoch from now on raises KeyboardInterrupt,
    as Ctrl-C during that epoch would. Returns the real train_one_epoch."""
    import train

    def arm(n):
        original, calls = train.train_one_epoch, {"n": 0}

        def interrupted(*a, **k):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return original(*a, **k)

        monkeypatch.setattr(train, "train_one_epoch", interrupted)
        return original

    return arm
