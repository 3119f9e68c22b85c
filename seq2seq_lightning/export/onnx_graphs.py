"""What is exported to ONNX: the encoder graph, the decoder-step graph, and the state layout between them.

Two graphs cover a translation model built from the built-in ``rnn`` encoder and ``rnn`` decoder:

- **encoder**: ``tokens`` (B, S) int64, ``lengths`` (B,) int64 -> the decoder's initial search state,
  one output per tensor of :class:`~seq2seq_lightning.decoders.rnn.RNNDecoderState` that the model has
  (``hidden``, ``cell`` for an LSTM, ``memory``, ``keys`` with attention, ``mask``, ``feed`` with input
  feeding). It runs :meth:`RNNEncoder.forward_masked` (packed sequences do not export) and
  ``decoder.init_state``.
- **decoder step**: ``tokens`` (N,) int64 and the state tensors -> ``log_probs`` (N, V) float32, the
  state tensors a step changes, named ``new_hidden``, ``new_cell``, ``new_feed`` (the rest are passed on
  unchanged by the runtime), and ``attention`` (N, S) when the decoder attends.

Every batch axis (``batch``, ``rows``) and the source axis (``source``) are dynamic.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from seq2seq_lightning.decoders.rnn import RNNDecoder, RNNDecoderState
from seq2seq_lightning.encoders.rnn import RNNEncoder

#: the fields of RNNDecoderState in order: (name, axis of the rows, axis of the source or None, changed by step)
RNN_STATE_FIELDS = (("hidden", 1, None, True), ("cell", 1, None, True), ("memory", 0, 1, False),
                    ("keys", 0, 1, False), ("mask", 0, 1, False), ("feed", 0, None, True))


@dataclass(frozen=True)
class StateTensor:
    """One tensor of the decoder's search state, as the manifest records it.

    Attributes:
        name: the field of :class:`RNNDecoderState` and the name of the graph input/output.
        batch_dim: the axis of the rows (what ``reorder_state`` index-selects).
        source_dim: the axis of the source positions, or None.
        updated: whether a decoder step returns a new value (else the runtime passes it on as it is).
    """

    name: str
    batch_dim: int
    source_dim: int | None
    updated: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_exportable(module: Any) -> None:
    """Raise a ValueError naming what cannot be exported unless ``module`` is a translation model built
    from the built-in ``rnn`` encoder and ``rnn`` decoder.

    Args:
        module: a :class:`~seq2seq_lightning.TranslationModule` (or anything else, refused).
    """
    encoder, decoder = getattr(module, "encoder", None), getattr(module, "decoder", None)
    if not hasattr(module, "source_tokenizer") or getattr(encoder, "modality", "text") != "text":
        raise ValueError(f"ONNX export covers translation models only; {type(module).__name__} with encoder "
                         f"{type(encoder).__name__} (reading {getattr(encoder, 'modality', '?')} input) is not one")
    if type(encoder) is not RNNEncoder:
        raise ValueError(f"ONNX export covers the built-in 'rnn' encoder (GRU or LSTM) only; this model's encoder is "
                         f"{type(encoder).__module__}.{type(encoder).__qualname__}")
    if type(decoder) is not RNNDecoder:
        raise ValueError(f"ONNX export covers the built-in 'rnn' decoder (GRU or LSTM) only; this model's decoder is "
                         f"{type(decoder).__module__}.{type(decoder).__qualname__}")


def state_layout(decoder: RNNDecoder) -> list[StateTensor]:
    """The state tensors this decoder's search state holds (fields that are None for it are left out)."""
    present = {"hidden", "memory", "mask"}
    present |= {"cell"} if decoder.cell == "lstm" else set()
    present |= {"keys"} if decoder.attention is not None else set()
    present |= {"feed"} if decoder.input_feeding else set()
    return [StateTensor(n, b, s, u) for n, b, s, u in RNN_STATE_FIELDS if n in present]


class EncoderGraph(nn.Module):
    """tokens (B, S) long, lengths (B,) long -> the initial state tensors, in :func:`state_layout` order.

    Args:
        encoder: the model's RNN encoder (run through its masked path).
        decoder: the model's RNN decoder (its ``init_state``).
    """

    def __init__(self, encoder: RNNEncoder, decoder: RNNDecoder) -> None:
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.layout = state_layout(decoder)

    def forward(self, tokens: Tensor, lengths: Tensor) -> tuple[Tensor, ...]:
        state = self.decoder.init_state(self.encoder.forward_masked(tokens, lengths))
        return tuple(getattr(state, t.name) for t in self.layout)


class StepGraph(nn.Module):
    """tokens (N,) long, *state -> log_probs (N, V) float32, the updated state tensors, [attention (N, S)].

    Args:
        decoder: the model's RNN decoder (its ``step``).
    """

    def __init__(self, decoder: RNNDecoder) -> None:
        super().__init__()
        self.decoder = decoder
        self.layout = state_layout(decoder)

    def forward(self, tokens: Tensor, *tensors: Tensor) -> tuple[Tensor, ...]:
        given = dict(zip((t.name for t in self.layout), tensors))
        state = RNNDecoderState(**{name: given.get(name) for name, *_ in RNN_STATE_FIELDS})
        log_probs, new = self.decoder.step(tokens, state)
        outputs = [log_probs] + [getattr(new, t.name) for t in self.layout if t.updated]
        if self.decoder.attention is not None:
            outputs.append(self.decoder.last_attention)
        return tuple(outputs)

    def output_names(self) -> list[str]:
        """``log_probs``, ``new_<name>`` for each updated state tensor (a graph's input and output names
        differ), and ``attention`` when the decoder attends."""
        names = ["log_probs"] + [f"new_{t.name}" for t in self.layout if t.updated]
        return names + (["attention"] if self.decoder.attention is not None else [])


def dynamic_axes(layout: list[StateTensor], rows: str, prefix: str = "") -> dict[str, dict[int, str]]:
    """The dynamic axes (``rows`` and ``source``) of the state tensors in ``layout``, named ``prefix + name``."""
    axes: dict[str, dict[int, str]] = {}
    for t in layout:
        axes[prefix + t.name] = {t.batch_dim: rows} | ({} if t.source_dim is None else {t.source_dim: "source"})
    return axes


def sample_source(vocab_size: int, lengths: tuple[int, ...] = (7, 4, 2)) -> tuple[Tensor, Tensor]:
    """An example source batch to trace with: tokens (B, S) long (padding 0 past each length), lengths (B,)."""
    generator = torch.Generator().manual_seed(0)
    tokens = torch.randint(4, max(vocab_size, 5), (len(lengths), max(lengths)), generator=generator)
    tokens = tokens.clamp(max=vocab_size - 1)
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    tokens[torch.arange(max(lengths))[None, :] >= lengths_t[:, None]] = 0
    return tokens, lengths_t
