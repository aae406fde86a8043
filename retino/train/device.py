"""Device choice and the CUDA-only speed settings (bf16 autocast, channels_last)."""

from __future__ import annotations

import contextlib
from typing import ContextManager

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


def configure_backends(device: torch.device) -> None:
    if device.type == "cuda":
        # fixed input sizes, so cuDNN's autotuner pays off after the first batch
        torch.backends.cudnn.benchmark = True
