"""Data-parallel training over several processes (torchrun), for train.py's loop.

Not in the thesis, which trained on one GPU (§4.3.2). `torchrun --nproc_per_node=N train.py ...` starts
N copies of train.py; each joins one process group, trains on its share of every batch, and the
gradients are averaged during backward (DistributedDataParallel), so the N processes together take the
steps one process would take with the whole batch (exactly for BCE, a mean over pixels; the Dice term of
--loss bce_dice is each process's over its share of the batch). Without torchrun every helper here is a
no-op and a run is exactly the single-process one. docs/speed.md says how to launch it.
"""
import math
import os
import sys

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn


def world():
    """(rank, number of processes): (0, 1) unless torchrun started this process."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def join_torchrun(device):
    """Join torchrun's process group when it started N > 1 processes (WORLD_SIZE): NCCL between GPUs
    (process i takes GPU LOCAL_RANK), gloo between CPUs. Processes other than rank 0 print nothing."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if dist.get_rank() > 0:
        sys.stdout = open(os.devnull, "w")
    return device


def steps_per_epoch(n, batch_size):
    """Optimiser steps in an epoch of n samples: under torchrun each process takes batch_size / N of
    every batch of its share of ceil(n / N) samples (as DistributedSampler deals them)."""
    world_size = world()[1]
    return math.ceil(math.ceil(n / world_size) / (batch_size // world_size))


def check_batch(batch_size):
    """Under torchrun the batch is shared by the processes: it must divide evenly."""
    world_size = world()[1]
    if batch_size % world_size:
        from cli import UsageError
        raise UsageError(f"--batch-size {batch_size} is the whole batch, shared by the {world_size} "
                         f"processes of torchrun: use a multiple of {world_size}")


def describe(batch_size):
    """'' in one process; under torchrun, how the processes share each batch (for the run's first lines)."""
    world_size = world()[1]
    if world_size == 1:
        return ""
    return (f"; torchrun: {world_size} processes ({dist.get_backend()}), each trains "
            f"{batch_size // world_size} of every batch of {batch_size}; rank 0 logs, saves and evaluates")


def leave():
    """Leave the process group at the end of a run (nothing to do without torchrun), once every process
    is done: rank 0 evaluates while the others wait, and a process that tore its connections down first
    could abort its partner's gloo threads ("terminate called without an active exception")."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def is_main():
    """True in the process that logs, saves and evaluates: rank 0, or the only process."""
    return world()[0] == 0


def share_buffers(model):
    """Copy rank 0's buffers (BatchNorm running statistics) to every process (nothing in one process)."""
    if world()[1] > 1:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def mean(value):
    """A Python number averaged over all processes' equal shares; unchanged in one process."""
    world_size = world()[1]
    return value if world_size == 1 else all_sum(value)[0] / world_size


def seed_dropout(seed, epoch):
    """Under torchrun, processes other than rank 0 draw dropout masks of their own,
    from (seed, epoch, rank)."""
    rank = world()[0]
    if rank > 0:
        torch.manual_seed(int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0]))


def all_sum(*values):
    """Python numbers summed over all processes (one all-reduce); returned unchanged without torchrun."""
    if world()[1] == 1:
        return values
    on = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    total = torch.tensor(values, dtype=torch.float64, device=on)
    dist.all_reduce(total)
    return tuple(type(v)(t) for v, t in zip(values, total.tolist()))


def from_rank0(fn, *args):
    """fn(*args) run by rank 0 alone (it creates folders); its result, or the exception it raised,
    is shared with every process, so that all of them return it or raise it together."""
    rank, world_size = world()
    if world_size == 1:
        return fn(*args)
    box = [None]
    if rank == 0:
        try:
            box[0] = (fn(*args), None)
        except Exception as exc:  # re-raised by every process below, rank 0 included
            box[0] = (None, exc)
    dist.broadcast_object_list(box, src=0)
    result, error = box[0]
    if error is not None:
        raise error
    return result


def train_loader(train_ds, batch_size, seed, epoch, workers=0, pin_memory=False):
    """This epoch's shuffled batches, the order drawn from (seed, epoch) (§4.3.2).

    Under torchrun each of the N processes takes batch_size / N samples of every batch of the
    one-process order, dealt out as DistributedSampler deals its indices (sample i to process
    i mod N; the first samples repeat when N does not divide the data set), so that the N processes
    together train on the one-process batches. The order is read from a one-process loader itself
    (DataLoader draws from its generator before the permutation; DistributedSampler would not).
    """
    rank, world_size = world()
    shuffle = torch.Generator().manual_seed(seed * 100_003 + epoch)
    common = {"num_workers": workers, "pin_memory": pin_memory}  # pinned: non-blocking copies to the GPU
    if world_size == 1:
        return torch.utils.data.DataLoader(train_ds, batch_size=batch_size, shuffle=True, generator=shuffle,
                                           **common)
    order = [int(i) for i in torch.utils.data.DataLoader(range(len(train_ds)), batch_size=None, shuffle=True,
                                                          generator=shuffle)]
    order += order[:(-len(order)) % world_size]  # as DistributedSampler pads
    return torch.utils.data.DataLoader(train_ds, batch_size=batch_size // world_size,
                                       sampler=order[rank::world_size], **common)


def shard(dataset):
    """This process's share of a data set under torchrun (every N-th item); all of it otherwise."""
    rank, world_size = world()
    return (dataset if world_size == 1
            else torch.utils.data.Subset(dataset, range(rank, len(dataset), world_size)))


def training_module(model, device, compile=False):
    """What the training steps call: the model itself, wrapped in DistributedDataParallel under
    torchrun (gradients averaged over the processes during backward, BatchNorm statistics taken
    from rank 0), then compiled with `compile` (train.py --compile). Checkpoints keep saving
    `model`'s own weights."""
    net = model
    if world()[1] > 1:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index]
                                                  if device.type == "cuda" else None)
    if compile:
        net = torch.compile(net)
    return net
