"""Device choice, the CUDA-only speed settings (bf16 autocast, channels_last, cuDNN's
autotuner), reproducibility on CUDA when asked (``compute.deterministic``) and true
float32 while scoring."""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager, Iterator

import torch

from retino.errors import ParamsError
from retino.params import CPU_COMPILE, DEVICES


def resolve_device(name: str, setting: str = "compute.device") -> torch.device:
    """``auto`` -> CUDA when present, else CPU. ``cuda`` without CUDA is an error,
    never a silent fall back to the CPU. ``setting`` names where the value came from."""
    if name not in DEVICES:
        raise ParamsError(f"{setting} = {name!r}: must be one of: {', '.join(DEVICES)}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ParamsError(f"{setting} = 'cuda' but this machine has no usable CUDA device; "
                          "use auto or cpu")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def check_compile(enabled: bool, device: torch.device, device_setting: str) -> None:
    """compute.compile is for CUDA: on a CPU device (asked for, or what ``auto`` found)
    it stops the stage before any work, never silently trains uncompiled."""
    if enabled and device.type != "cuda":
        raise ParamsError(f"compute.compile = true, but this stage trains on the CPU "
                          f"(compute.device = {device_setting!r}): {CPU_COMPILE}")


def autocast(device: torch.device) -> ContextManager:
    """bf16 mixed precision on CUDA (no loss scaling needed); full fp32 on CPU."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def memory_format(device: torch.device) -> torch.memory_format:
    """channels_last on CUDA, where cuDNN's tensor-core convolutions want it; the
    contiguous layout on the CPU, where channels_last measured slower at the default
    48 px (``bench/levers.py``: ResNet-18 and ResNet-50, training and scoring)."""
    return torch.channels_last if device.type == "cuda" else torch.contiguous_format


# cuBLAS' reproducible workspace (NVIDIA's cuBLAS docs); read when cuBLAS starts
CUBLAS_WORKSPACE = ":4096:8"


_CONSTANTS: dict[tuple[str, str, torch.dtype], torch.Tensor] = {}


def device_constant(name: str, values: list, like: torch.Tensor) -> torch.Tensor:
    """``values`` as a tensor on ``like``'s device and dtype, made once per device and
    dtype: a tensor made anew in every training step would be copied to the device, and
    wait for it, every step."""
    key = (name, str(like.device), like.dtype)
    if key not in _CONSTANTS:
        _CONSTANTS[key] = torch.tensor(values, dtype=like.dtype).to(like.device)
    return _CONSTANTS[key]


def configure_backends(device: torch.device, deterministic: bool = False) -> None:
    """cuDNN's autotuner on CUDA (fixed input sizes: it pays off after the first batch),
    or, with ``deterministic`` (``compute.deterministic``), reproducible CUDA kernels:
    PyTorch's deterministic algorithms (an op without one warns, it does not stop the
    run), no autotuner, cuBLAS' fixed workspace. Call it before any CUDA work. On the
    CPU nothing changes: its kernels give the same results run after run already."""
    if device.type != "cuda":
        return
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """True float32 while scoring: this torch lets cuDNN's convolutions use TF32 (a
    10-bit mantissa) on CUDA by default, so "fp32" outputs, stored features and
    Grad-CAM maps would not be. Sets convolutions and matrix products to IEEE float32
    (PyTorch's fp32_precision settings) for the block and restores them after, so the
    training step keeps its speed. On the CPU it changes nothing."""
    if not hasattr(torch.backends.cudnn, "conv"):  # a torch before the fp32_precision API
        saved = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32 = saved
        return
    settings = (torch.backends.cudnn.conv, torch.backends.cuda.matmul)
    saved = [setting.fp32_precision for setting in settings]
    for setting in settings:
        setting.fp32_precision = "ieee"
    try:
        yield
    finally:
        for setting, value in zip(settings, saved):
            setting.fp32_precision = value
