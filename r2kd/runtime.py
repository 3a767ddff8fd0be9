"""Device choice, mixed precision, threads and seeding: everything that makes a run reproducible."""

from __future__ import annotations

import contextlib
import os
import random
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from r2kd.errors import ConfigError


@dataclass(frozen=True)
class RunSpec:
    """A training stage's runtime settings (``params.runtime`` on this process), resolved once at the
    stage's entry (:meth:`of`) and passed down instead of the params."""

    device: torch.device
    amp: str  # what runs (fp16 on a CPU runs in float32: "none")
    fast: bool  # runtime.fast_path on this device
    deterministic: bool
    workers: int
    sync_frozen_bn: bool
    settings: dict[str, Any]  # runtime.result_settings(): part of every fingerprint

    @property
    def graphs(self) -> bool:
        return graphs_enabled(self.fast, self.device, self.amp)

    @classmethod
    def of(cls, runtime, jobs_per_gpu: int | None) -> "RunSpec":
        """``runtime`` (r2kd.config.Runtime) on this process: sets the thread count, picks the device."""
        set_threads(runtime.threads)
        device = resolve_device(runtime.device, jobs_per_gpu)
        return cls(device, resolve_amp(runtime.amp, device), fast_path_enabled(runtime.fast_path, device),
                   runtime.deterministic, runtime.workers, runtime.sync_frozen_bn, runtime.result_settings())


_claimed_gpu: dict[tuple[int, int], int] = {}


def resolve_device(spec: str = "auto", jobs_per_gpu: int | None = None) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda[:N]`` fails clearly without a GPU. With ``jobs_per_gpu``,
    ``auto`` and ``cuda`` claim a free slot on one GPU for the process's life, so that jobs started side by side
    spread over the GPUs (docs/distributed.md, "Which GPUs"); in a torchrun world on CUDA each process is on
    cuda:LOCAL_RANK."""
    import torch.distributed as dist

    if spec in ("auto", "cuda") and jobs_per_gpu is not None and torch.cuda.is_available() \
            and int(os.environ.get("WORLD_SIZE", "1")) == 1:
        from r2kd import gpu_slots, paths

        # One slot per process: a stage function called again in the same process (as tests do) keeps
        # the GPU it holds instead of waiting, forever, for a second slot.
        key = (os.getpid(), jobs_per_gpu)
        if key not in _claimed_gpu:
            _claimed_gpu[key] = gpu_slots.claim(
                gpu_slots.cuda_gpu_ids(), jobs_per_gpu, paths.GPU_SLOTS,
                on_wait=lambda: warnings.warn(f"every GPU runs {jobs_per_gpu} job(s) of this kind already "
                                              "(resources.<stage>.jobs_per_gpu); waiting for a free slot"))
        device = torch.device("cuda", _claimed_gpu[key])
        torch.cuda.set_device(device)
    elif spec == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(spec)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ConfigError(f"runtime.device: {spec!r} asked for, but no CUDA device is available")
        if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"runtime.device: {spec!r} asked for, but only {torch.cuda.device_count()} CUDA "
                              "devices exist")
    if device.type == "cuda" and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise ConfigError(f"runtime.nproc_per_node: process {local_rank} needs cuda:{local_rank}, "
                              f"but only {torch.cuda.device_count()} CUDA devices exist")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    return device


def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed every RNG and return a CPU generator for the run's own random draws."""
    random.seed(seed)
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    # CPU kernels are deterministic already; the switch matters (and costs a ~5 s torch._dynamo
    # import) only on CUDA.
    if deterministic and torch.cuda.is_available():
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    return torch.Generator().manual_seed(seed)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


def fast_path_enabled(setting: str, device: torch.device) -> bool:
    """``runtime.fast_path`` on ``device``: auto = on for CUDA only (CPU defaults keep their bits)."""
    if setting not in ("auto", "always", "never"):
        raise ConfigError(f"runtime.fast_path must be auto, always or never, got {setting!r}")
    return device.type == "cuda" if setting == "auto" else setting == "always"


def graphs_enabled(fast: bool, device: torch.device, amp: str) -> bool:
    """Whether the training step is replayed as a CUDA graph (r2kd.fast.graphs): part of the fast path
    on CUDA, except with fp16, whose loss scaler checks for overflow on the host every step."""
    return fast and device.type == "cuda" and effective_amp(amp, device) != "fp16"


def fast_layout(module: torch.nn.Module) -> torch.nn.Module:
    """The fast path's memory format (channels_last) for a network's 4-d weights; rounding may change."""
    return module.to(memory_format=torch.channels_last)


def effective_amp(amp: str, device: torch.device) -> str:
    """The mixed precision a run actually uses on ``device``: bf16 autocast works on CPU and GPU (users
    opt in to it), so it applies everywhere; fp16 needs a GPU (loss scaling, fp16 kernels) and on the
    CPU falls back to float32, recorded as ``none``."""
    return "none" if amp == "fp16" and device.type == "cpu" else amp


def resolve_amp(amp: str, device: torch.device) -> str:
    """:func:`effective_amp`, with a warning when the requested mode is not what runs."""
    effective = effective_amp(amp, device)
    if effective != amp:
        warnings.warn(f"runtime.amp: {amp!r} needs a CUDA device; running in float32 on {device} "
                      f"(provenance records amp {effective!r})")
    return effective


def autocast(device: torch.device, amp: str, cache_enabled: bool = True):
    """The autocast context of ``runtime.amp`` on ``device`` (bf16 applies on CPU too; fp16 needs CUDA).

    ``cache_enabled=False`` inside a CUDA graph: a cast cached at capture would go stale."""
    amp = effective_amp(amp, device)
    if amp == "none":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if amp == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache_enabled)
