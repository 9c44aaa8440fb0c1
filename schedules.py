"""Optimisers and learning-rate schedules of the thesis's hyperparameter search (App. B, Table 2).

The schedules are written as formulas of the step, so that a test can set them beside torch's own
(CosineAnnealingLR, OneCycleLR) and Keras's ReduceLROnPlateau. §4.3.2: the best runs used AdamW with
cosine decay per step.
"""
import math

import torch


def cosine_lr(step, total_steps, base_lr):
    """Cosine decay to 0 over all steps [69]: lr_t = lr * (1 + cos(pi t / T)) / 2."""
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))


PCT_START = 0.3  # the share of the steps one-cycle warms up over (torch's OneCycleLR), lr and momentum alike


def _two_phases(step, total_steps, start, turn, end, pct_start):
    """The one-cycle shape: cosine from `start` to `turn` over the first pct_start of the steps, then
    cosine from `turn` to `end` (the phase boundary of torch's OneCycleLR)."""
    warm = float(pct_start * total_steps) - 1
    if step <= warm:
        lo, hi, frac = start, turn, step / warm
    else:
        lo, hi, frac = turn, end, (step - warm) / (total_steps - 1 - warm)
    return hi + (lo - hi) * 0.5 * (1.0 + math.cos(math.pi * min(frac, 1.0)))


def one_cycle_lr(step, total_steps, max_lr, pct_start=PCT_START, div_factor=25.0, final_div_factor=1e4):
    """One-cycle policy [67]: cosine warm-up from max_lr/25 to max_lr over 30% of the steps, then
    cosine annealing to max_lr/(25*1e4) (the constants of torch's OneCycleLR)."""
    start, end = max_lr / div_factor, max_lr / (div_factor * final_div_factor)
    return _two_phases(step, total_steps, start, max_lr, end, pct_start)


def one_cycle_momentum(step, total_steps, pct_start=PCT_START, low=0.85, high=0.95):
    """The momentum half of the one-cycle policy [67]: from 0.95 down to 0.85 while the learning rate
    warms up, back to 0.95 while it anneals. The thesis code's callback sets it on an optimiser that has
    a momentum (SGD); Keras's Adam has none, so Adam and AdamW keep their beta1 (torch's OneCycleLR would
    cycle it)."""
    return _two_phases(step, total_steps, high, low, high, pct_start)


class Scheduler:
    """Sets the optimiser's learning rate: per step (cosine, one-cycle) or per epoch (plateau); under
    one-cycle an SGD optimiser's momentum follows `one_cycle_momentum`, as in the thesis code.

    Plateau follows Keras ReduceLROnPlateau as used in App. B: factor 0.5 after `patience` epochs
    without improvement of the validation loss, never below lr/10.
    """

    def __init__(self, optimizer, kind, base_lr, total_steps, patience=10, factor=0.5):
        self.optimizer, self.kind, self.base_lr, self.total_steps = (optimizer, kind, base_lr,
                                                                     max(total_steps, 2))
        self.patience, self.factor, self.min_lr = patience, factor, base_lr / 10
        self.step_count, self.lr, self.best, self.bad = 0, base_lr, math.inf, 0
        self._apply(self._lr_at(0))

    def _lr_at(self, step):
        if self.kind == "cosine":
            return cosine_lr(step, self.total_steps, self.base_lr)
        if self.kind == "onecycle":
            return one_cycle_lr(step, self.total_steps, self.base_lr)
        return self.lr

    def _apply(self, lr):
        self.lr = lr
        momentum = one_cycle_momentum(self.step_count, self.total_steps) if self.kind == "onecycle" else None
        for group in self.optimizer.param_groups:
            group["lr"] = lr
            if momentum is not None and "momentum" in group:  # SGD (App. B): the momentum cycles too
                group["momentum"] = momentum

    def step(self):
        self.step_count += 1
        self._apply(self._lr_at(self.step_count))

    def epoch_end(self, val_loss):
        if self.kind != "plateau":
            return
        if val_loss < self.best - 1e-4:  # Keras min_delta
            self.best, self.bad = val_loss, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                self._apply(max(self.lr * self.factor, self.min_lr))
                self.bad = 0

    def state_dict(self):
        return {k: getattr(self, k) for k in ("step_count", "lr", "best", "bad")}

    def load_state_dict(self, state):
        self.__dict__.update(state)
        self._apply(self.lr)


def make_optimizer(name, params, lr, weight_decay):
    """App. B: SGD (momentum 0.99), Adam, AdamW (decoupled weight decay [57]).

    Adam and AdamW take torch's fused kernel where the torch build has one for the parameters' device
    (one pass over all tensors instead of a dozen small operations per tensor: the demo's step 4%
    faster on a CPU); the arithmetic is Adam's, only its rounding may differ in the last bit.
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.99)
    cls, kw = ((torch.optim.Adam, {}) if name == "adam"
               else (torch.optim.AdamW, {"weight_decay": weight_decay}))
    params = list(params)
    try:
        return cls(params, lr=lr, fused=True, **kw)
    except RuntimeError:  # an older torch, or a device without the fused kernel
        return cls(params, lr=lr, **kw)
