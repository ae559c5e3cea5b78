"""Where models run: ``auto`` is CUDA when present, else the CPU."""
from __future__ import annotations

DEVICE_HELP = "auto (CUDA when present, else cpu), cpu, cuda or cuda:N"


def resolve_device(device: str | None = "auto") -> str:
    """``auto`` / ``None`` -> ``cuda`` when available (``cuda:LOCAL_RANK`` under a multi-process
    launcher), else ``cpu``; ``cpu``, ``cuda``, ``cuda:N`` checked.

    Raises:
        ValueError: another value, or CUDA asked for where there is none (naming the allowed values).
    """
    import torch

    device = "auto" if device is None else str(device).strip().lower()
    if device == "auto":  # one GPU per process under a multi-process launcher
        if not torch.cuda.is_available():
            return "cpu"
        import os

        return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if int(os.environ.get("WORLD_SIZE", 1)) > 1 else "cuda"
    if device != "cpu" and not (device == "cuda" or (device.startswith("cuda:") and device[5:].isdigit())):
        raise ValueError(f"device {device!r} not allowed; allowed: {DEVICE_HELP}")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device}: CUDA is not available on this machine; use auto or cpu")
        index = int(device[5:]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device
