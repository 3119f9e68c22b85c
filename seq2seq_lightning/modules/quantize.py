"""Dynamic int8 quantization of a module for CPU inference: ``module.quantize("int8")``.

Every ``nn.Linear`` (but those with fewer than :data:`MIN_LINEAR_OUTPUTS` outputs), ``nn.GRU``,
``nn.LSTM``, ``nn.GRUCell`` and ``nn.LSTMCell`` (exact types, so subclasses with their own forward stay
float) is replaced, in place, by its dynamically quantized counterpart from
``torch.ao.nn.quantized.dynamic``: int8 weights, activations quantized on the fly per call, float32 in and
out. Linear weights are quantized per output channel (one scale per row of the
output projection), recurrent weights per tensor (what the quantized RNN kernels take). Embeddings,
convolutions, attention energies computed by hand and the search itself stay float32.

Which torch path: ``torch.ao.quantization.quantize_dynamic`` is deprecated in the installed torch (2.14;
it points to torchao's ``quantize_``, which has no recurrent layers and is not a dependency here). The
quantized module classes and their ``from_float`` constructors carry no deprecation, so the swap is done
here with them; they still build their weights as ``torch.qint8`` tensors, whose creation torch 2.13+
announces as deprecated for a future release (one UserWarning, silenced here during the swap). These are
the only int8 CPU kernels torch ships for GRU and LSTM today; when the quantized dtypes go, this file is
what changes (plain ``torch.int8`` weights and scales).

A quantized module is for inference only: ``translate``, ``caption``, ``score``, ``predict`` and every
search strategy work; training (a forward pass with gradients on) and ``state_dict`` (so checkpoint
saving) raise :class:`QuantizedModuleError`. Quantize a module loaded from its float
checkpoint, each time it is loaded (it takes a fraction of a second).
"""

from __future__ import annotations

import warnings
from collections import Counter
from typing import Any

import torch
from torch import nn

#: the modes ``quantize`` accepts
MODES = ("int8",)
#: Linear layers with fewer outputs stay float32: their cost is reading the input, which dynamic int8 reads
#: twice more (its range, then quantizing it) to save almost nothing in the matmul; a 256 -> 1 attention
#: energy layer over (320, 15, 256) took 0.3 ms in float32 and 70 ms in int8 here
MIN_LINEAR_OUTPUTS = 8


class QuantizedModuleError(RuntimeError):
    """Something a quantized (inference-only) module cannot do: training, ``state_dict``, saving."""


def _replacements() -> dict[type, Any]:
    import torch.ao.nn.quantized.dynamic as qd

    return {nn.Linear: qd.Linear, nn.GRU: qd.GRU, nn.LSTM: qd.LSTM, nn.GRUCell: qd.GRUCell,
            nn.LSTMCell: qd.LSTMCell}


def _engine() -> None:
    """Pick a quantized CPU engine this build supports (x86 or fbgemm, else qnnpack on ARM)."""
    supported = torch.backends.quantized.supported_engines
    if torch.backends.quantized.engine in ("x86", "fbgemm", "qnnpack", "onednn"):
        return
    for name in ("x86", "fbgemm", "qnnpack"):
        if name in supported:
            torch.backends.quantized.engine = name
            return
    raise RuntimeError(f"this torch build has no quantized CPU engine (supported: {supported})")


def quantize_dynamic_int8(root: nn.Module) -> Counter[str]:
    """Replace, in place, every quantizable layer under ``root`` by its dynamic int8 version.

    Returns how many layers of each float type were replaced (``{"Linear": 6, "GRU": 2}``, say).
    """
    from torch.ao.quantization.qconfig import default_dynamic_qconfig, per_channel_dynamic_qconfig

    _engine()
    swaps = _replacements()
    counts: Counter[str] = Counter()
    for parent in list(root.modules()):
        for name, child in list(parent.named_children()):
            target = swaps.get(type(child))
            if target is None or (type(child) is nn.Linear and child.out_features < MIN_LINEAR_OUTPUTS):
                continue
            child.qconfig = per_channel_dynamic_qconfig if type(child) is nn.Linear else default_dynamic_qconfig
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize")
                    setattr(parent, name, target.from_float(child))
            finally:
                del child.qconfig
            counts[type(child).__name__] += 1
    return counts


def _no_state_dict(module: nn.Module, prefix: str, keep_vars: bool) -> None:
    raise QuantizedModuleError(
        f"{type(module).__name__} is quantized ({module.quantized}) for inference: it has no float weights to "
        "save; save or average the float module (load its checkpoint again) and quantize after loading")


def _no_training(module: nn.Module, args: Any) -> None:
    # a forward pass with gradients on is training (Lightning keeps a module in the eval mode quantize set)
    if torch.is_grad_enabled():
        raise QuantizedModuleError(
            f"{type(module).__name__} is quantized ({module.quantized}) for inference: it cannot be trained; "
            "call it under torch.no_grad() (translate, score and predict do), and train the float module")


def quantize_module(module: nn.Module, mode: str = "int8") -> nn.Module:
    """``module`` quantized in place for CPU inference (see the module docstring); returns it.

    A module on a GPU (any parameter or buffer on a non-CPU device) is refused with a RuntimeError: move it
    with ``module.cpu()`` first. An unknown ``mode`` is a ValueError. Quantizing twice in the same mode
    does nothing the second time.
    """
    if mode not in MODES:
        raise ValueError(f"unknown quantization mode {mode!r}; known: {', '.join(MODES)}")
    done = getattr(module, "quantized", None)
    if done == mode:
        return module
    if done is not None:
        raise ValueError(f"{type(module).__name__} is already quantized ({done})")
    devices = sorted({t.device.type for t in (*module.parameters(), *module.buffers())} - {"cpu"})
    if devices or on_gpu(module):
        raise RuntimeError(f"quantize({mode!r}) is for CPU inference, but {type(module).__name__} is on "
                           f"{', '.join(devices) or 'a GPU'}; move it first: module.cpu().quantize({mode!r})")
    module.eval()
    counts = quantize_dynamic_int8(module)
    module.quantized = mode
    module.quantized_layers = dict(counts)
    module.register_state_dict_pre_hook(_no_state_dict)
    module.register_forward_pre_hook(_no_training)
    return module


def on_gpu(module: nn.Module) -> bool:
    """Whether the module says it is on a GPU (a LightningModule's ``device``; tests replace this)."""
    device = getattr(module, "device", None)
    return isinstance(device, torch.device) and device.type != "cpu"
