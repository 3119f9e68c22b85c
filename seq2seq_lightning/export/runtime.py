"""ONNX Runtime sessions of an exported model: the encoder, and a StepDecoder over the step graph.

The search state is a plain dict ``{name: Tensor}`` (torch tensors, CPU), one entry per tensor of the
manifest's ``state`` layout, so every search strategy runs over it unchanged: :meth:`OnnxStepDecoder.step`
feeds the tensors to ONNX Runtime (zero-copy NumPy views) and wraps its outputs back as tensors;
:meth:`OnnxStepDecoder.reorder_state` index-selects each tensor along its row axis.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from seq2seq_lightning.export.onnx_deps import require

State = dict[str, Tensor]


def load_manifest(path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The folder and parsed manifest of an export (``path``: the folder or its ``manifest.json``)."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    file = folder / "manifest.json"
    if not file.is_file():
        raise FileNotFoundError(f"no ONNX export at {folder}: {file.name} is missing (write one with seq2seq export)")
    manifest = json.loads(file.read_text(encoding="utf-8"))
    if manifest.get("format") != "seq2seq-lightning-onnx":
        raise ValueError(f"{file} is not a seq2seq-lightning ONNX manifest")
    return folder, manifest


def make_session(path: Path, providers: list[str] | None = None, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of one graph.

    Args:
        path: the ``.onnx`` file.
        providers: ONNX Runtime execution providers (default: the CPU one).
        threads: intra-op threads (default: ONNX Runtime's choice, one per physical core).
    """
    ort = require("onnxruntime", "OnnxTranslator")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # no shape-inference warnings on stderr
    # no busy-waiting between runs: the search's torch ops run between two steps, on the same cores
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])


class OnnxEncoder:
    """Runs the encoder graph: source tokens and lengths -> the decoder's initial state.

    Args:
        session: the encoder graph's session.
        names: the state tensors' names, in the manifest's order (the graph's outputs).
    """

    def __init__(self, session: Any, names: list[str]) -> None:
        self.session, self.names = session, names

    def __call__(self, tokens: Tensor, lengths: Tensor) -> State:
        """tokens (B, S) long, lengths (B,) long -> the initial state of the B rows."""
        outputs = self.session.run(self.names, {"tokens": _numpy(tokens), "lengths": _numpy(lengths)})
        return {name: torch.from_numpy(value) for name, value in zip(self.names, outputs)}


class OnnxStepDecoder:
    """A :class:`~seq2seq_lightning.search.StepDecoder` whose ``step`` runs the exported step graph.

    Args:
        session: the step graph's session.
        manifest: the export's manifest (its ``state`` layout, ``step_outputs`` and ``vocab_size``).

    Attributes:
        last_attention: (N, S) float attention of the latest step (None without attention).
    """

    def __init__(self, session: Any, manifest: dict[str, Any]) -> None:
        self.session = session
        self.layout = manifest["state"]
        self.batch_dims = {t["name"]: int(t["batch_dim"]) for t in self.layout}
        # the state tensors a step reads: the exporter drops unread ones (memory, mask without attention)
        self.inputs = [i.name for i in session.get_inputs() if i.name != "tokens"]
        self.outputs = list(manifest["step_outputs"])
        self.vocab_size = int(manifest["vocab_size"])
        self.last_attention: Tensor | None = None

    def step(self, tokens: Tensor, state: State) -> tuple[Tensor, State]:
        """tokens (N,) long, the last token of each row -> log-probs (N, V) float32, new state."""
        rows = int(tokens.numel())
        if rows == 0:  # nothing to run (the runtimes differ on empty inputs)
            memory = state.get("memory")
            self.last_attention = None if "attention" not in self.outputs or memory is None else \
                torch.zeros(0, memory.size(1))
            return torch.zeros(0, self.vocab_size), state
        feed = {"tokens": _numpy(tokens)} | {name: _numpy(state[name]) for name in self.inputs}
        values = [torch.from_numpy(v) for v in self.session.run(self.outputs, feed)]
        new = dict(state)
        attention = None
        for name, value in zip(self.outputs[1:], values[1:]):
            if name == "attention":
                attention = value
            else:
                new[name.removeprefix("new_")] = value
        self.last_attention = attention
        return values[0], new

    def reorder_state(self, state: State, index: Tensor) -> State:
        """New row i = old row ``index[i]`` of every state tensor (along its own row axis)."""
        index = index.to("cpu")
        return {name: value.index_select(self.batch_dims[name], index) for name, value in state.items()}


def _numpy(t: Tensor) -> np.ndarray:
    """A NumPy view of a CPU tensor (a copy only when it is not contiguous or lives elsewhere)."""
    return t.detach().to("cpu").contiguous().numpy()
