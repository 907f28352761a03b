"""Training precision by capability: bf16 autocast only where the hardware runs it natively.

    use_bf16("auto", "cpu")   # True on a CPU with AVX512-BF16 or AMX, False on one with AVX2 only
    use_bf16(True, "cpu")     # True everywhere; one warning where bf16 is emulated (several times slower)

Why: on a CPU without native bf16 (AVX2 only), PyTorch emulates bf16 matmuls and a tiny GPT's training step
is 6-7x *slower* under bf16 autocast than in fp32; on one with AVX512-BF16 or AMX it is faster. A setting that
suits one CPU would cripple the other, so every chapter's `bf16` parameter defaults to "auto".

The precision changes the weights a run produces, so cache keys hold the *effective* precision (`use_bf16`'s
answer), never the setting: two machines that resolve "auto" differently never share an artifact.
"""
from __future__ import annotations

import functools
import warnings

SETTINGS = ("auto", True, False)
DOC = ("bf16 autocast while training: 'auto' (bf16 only where the hardware runs it natively: a CPU with "
       "AVX512-BF16/AMX or a CUDA device with bf16; fp32 elsewhere), true or false")
_warned: set[str] = set()


def _device_type(device) -> str:
    return device if isinstance(device, str) else getattr(device, "type", str(device))


@functools.cache
def native_bf16(device_type: str = "cpu") -> bool:
    """Does this machine run bf16 matmuls natively on `device_type` ('cpu' or 'cuda')?"""
    import torch

    if device_type == "cuda":
        return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False))
    checks = [getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None)]
    return any(bool(check()) for check in checks if check is not None)


def use_bf16(setting, device="cpu") -> bool:
    """The effective choice for a `bf16` setting ('auto', True or False) on `device` (a name or torch.device)."""
    if setting not in SETTINGS or (setting is not True and setting is not False and setting != "auto"):
        raise ValueError(f"bf16 must be one of 'auto', true, false; got {setting!r}")
    kind = _device_type(device)
    if setting == "auto":
        return native_bf16(kind)
    if setting and not native_bf16(kind) and kind not in _warned:
        _warned.add(kind)
        warnings.warn(f"bf16: true on a {kind} without native bf16: autocast is emulated here and runs several times "
                      f"slower than fp32 (set bf16: auto or false)", stacklevel=2)
    return bool(setting)


def label(bf16: bool) -> str:
    """'bf16' or 'fp32': how pages and results records name the effective precision."""
    return "bf16" if bf16 else "fp32"


def describe(device="cpu") -> str:
    """One line for a page: what 'auto' resolves to on this machine, and why."""
    kind = _device_type(device)
    native = native_bf16(kind)
    return (f"{label(native)} (this {kind} {'runs' if native else 'has no'} native bf16"
            f"{'' if native else ', so bf16 would be emulated and slower'})")
