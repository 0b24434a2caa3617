"""torchrun / DDP start-up and the few collective decisions a training loop needs.

Every decision that changes which collectives run (stop now, save now) is taken on rank 0 and
broadcast, so ranks never wait on each other forever (seen on 4-GPU machines otherwise).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Runtime:
    rank: int
    world: int
    local_rank: int
    device: torch.device
    ddp: bool

    @property
    def master(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def autocast(self) -> AbstractContextManager:
        """bf16 autocast on CUDA, nothing on the CPU (the CPU path is for smoke tests)."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext()

    def agree(self, *values: float) -> list[float]:
        """Rank 0's `values` on every rank (one small broadcast)."""
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.ddp:
            dist.broadcast(t, src=0)
        return t.tolist()

    def in_sync(self, modules: Iterable[torch.nn.Module]) -> bool:
        """True when every rank holds the same parameters (guards against silent divergence)."""
        if not self.ddp:
            return True
        sums = torch.stack([p.detach().float().sum() for m in modules for p in m.parameters()])
        lo, hi = sums.clone(), sums.clone()
        dist.all_reduce(lo, op=dist.ReduceOp.MIN)
        dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        return torch.equal(lo, hi)

    def close(self) -> None:
        if self.ddp:
            dist.barrier()
            dist.destroy_process_group()


def start() -> Runtime:
    """Join the torchrun job when there is one (NCCL on GPUs, gloo on CPUs), else a single process."""
    ddp = "RANK" in os.environ
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    if ddp:
        dist.init_process_group("nccl" if cuda else "gloo", device_id=device if cuda else None)
        return Runtime(dist.get_rank(), dist.get_world_size(), local, device, True)
    return Runtime(0, 1, 0, device, False)


def compile_modules(modules: Iterable[torch.nn.Module]) -> Callable[[], None]:
    """`torch.compile` each module in place; returns an undo that makes them eager again.

    A compile failure only shows at the first call, so train.py runs its first step under a
    try and falls back to eager with the undo (what `nn.Module.compile` sets is `_compiled_call_impl`).
    """
    import torch._dynamo

    # instances of one class share a code object: the 5 period discriminators alone need 10 entries
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    modules = list(modules)
    for m in modules:
        m.compile()

    def undo() -> None:
        for m in modules:
            m._compiled_call_impl = None

    return undo


def conv_macs(module: torch.nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of the Conv2d layers in one forward `module(*inputs)`, counted with hooks.

    Runs in eval mode without gradients (no training-time state such as EMA codebooks moves).
    """
    total = [0]

    def hook(m: torch.nn.Module, _: tuple, out: torch.Tensor) -> None:
        assert isinstance(m, torch.nn.Conv2d)
        total[0] += out.numel() * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1]

    hooks = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            module(*inputs)
    finally:
        module.train(was_training)
        for h in hooks:
            h.remove()
    return total[0]
