"""``seq2seq export``: a translation checkpoint as two ONNX graphs, its tokenizers and a manifest.

The folder it writes::

    DIR/encoder.onnx            tokens, lengths -> the decoder's initial state   (onnx_graphs.EncoderGraph)
    DIR/decoder_step.onnx       tokens, state -> log_probs, new state, attention (onnx_graphs.StepGraph)
    DIR/source_tokenizer.json   the Hugging Face JSON of the source tokenizer
    DIR/target_tokenizer.json   ... and of the target tokenizer
    DIR/manifest.json           file names, graph inputs and outputs, the state layout, special ids,
                                max_len_a / max_len_b, batch_size and the configured strategy's spec

:class:`~seq2seq_lightning.export.runtime.OnnxTranslator` reads it back.

Which exporter: ``torch.onnx.export(..., dynamo=False)``, the TorchScript-based one. The recommended
``dynamo=True`` path traces through ``torch.export``, which decomposes ``aten::gru``/``aten::lstm`` into
one cell per time step while tracing and so specialises the source length to the example's (a
``Dim`` marked dynamic fails with "your code specialized it to be a constant"; the graph that comes
out declares a fixed source axis). The TorchScript exporter maps each recurrence to one ONNX
``GRU``/``LSTM`` operator and keeps every axis named in ``dynamic_axes`` dynamic.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seq2seq_lightning.export.onnx_deps import require
from seq2seq_lightning.export.onnx_graphs import (
    EncoderGraph,
    StepGraph,
    check_exportable,
    dynamic_axes,
    sample_source,
)
from seq2seq_lightning.spec import to_spec

FORMAT = "seq2seq-lightning-onnx"
VERSION = 1
ENCODER_FILE, STEP_FILE, MANIFEST_FILE = "encoder.onnx", "decoder_step.onnx", "manifest.json"
TOKENIZER_FILES = {"source": "source_tokenizer.json", "target": "target_tokenizer.json"}
#: the lowest opset the graphs export to and load in ONNX Runtime with (``Clip`` on int64 needs 12)
MIN_OPSET = 12


def _export(graph: torch.nn.Module, args: tuple, path: Path, input_names: list[str], output_names: list[str],
            axes: dict[str, dict[int, str]], opset: int | None) -> None:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # the TorchScript exporter, on purpose
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r".*(batch_first|batch_size|sequence_lens|hidden_size).*")
        try:
            torch.onnx.export(graph, args, str(path), dynamo=False, input_names=input_names,
                              output_names=output_names, dynamic_axes=axes, opset_version=opset)
        except torch.onnx.OnnxExporterError as exc:
            raise ValueError(f"the ONNX exporter failed on {path.name}: {str(exc).strip().splitlines()[-1]}") from exc


@torch.no_grad()
def export_onnx(module: Any, output: str | os.PathLike, *, opset: int | None = None, verify: bool = True,
                source: str | None = None) -> Path:
    """Write ``module`` (a TranslationModule with the built-in rnn encoder and decoder) to ``output``.

    Args:
        module: the translation model; it is exported on the CPU in eval mode (left as it was found).
        output: the folder to write (created; files already there are replaced).
        opset: the ONNX opset to target, at least :data:`MIN_OPSET` (default: the exporter's own default).
        verify: run both graphs once in ONNX Runtime on an example batch and raise an AssertionError
            unless the initial state and one step's log-probs match PyTorch's (to 1e-4).
        source: where the model came from (a checkpoint path), recorded in the manifest.

    Returns:
        The path of the manifest.
    """
    require("onnx", "ONNX export")
    check_exportable(module)
    if opset is not None and opset < MIN_OPSET:
        raise ValueError(f"opset {opset} is too old for these graphs; use {MIN_OPSET} or later (or leave it unset)")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    was_training, device = module.training, next(module.parameters()).device
    module.eval().cpu()
    try:
        # eval mode on the wrappers too: the exporter restores the mode it found, wrappers included
        encoder_graph = EncoderGraph(module.encoder, module.decoder).eval()
        step_graph = StepGraph(module.decoder).eval()
        layout = encoder_graph.layout
        names = [t.name for t in layout]
        tokens, lengths = sample_source(module.source_tokenizer.vocab_size)
        initial = encoder_graph(tokens, lengths)
        enc_axes = {"tokens": {0: "batch", 1: "source"}, "lengths": {0: "batch"}} | dynamic_axes(layout, "batch")
        _export(encoder_graph, (tokens, lengths), out / ENCODER_FILE, ["tokens", "lengths"], names, enc_axes, opset)
        step_tokens = torch.full((tokens.size(0),), module.target_tokenizer.bos_id, dtype=torch.long)
        step_outputs = step_graph.output_names()
        step_axes = {"tokens": {0: "rows"}} | dynamic_axes(layout, "rows") | dynamic_axes(layout, "rows", "new_")
        step_axes |= {"log_probs": {0: "rows"}, "attention": {0: "rows", 1: "source"}}
        step_axes = {k: v for k, v in step_axes.items() if k in ["tokens", *names, *step_outputs]}
        _export(step_graph, (step_tokens, *initial), out / STEP_FILE, ["tokens", *names], step_outputs, step_axes,
                opset)
        if verify:
            _verify(out, encoder_graph, step_graph, module)
        for side, name in TOKENIZER_FILES.items():
            tok = module.source_tokenizer if side == "source" else module.target_tokenizer
            (out / name).write_text(tok.to_json(), encoding="utf-8")
        manifest = _manifest(module, out, layout, step_outputs, source)
        path = out / MANIFEST_FILE
        path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        return path
    finally:
        module.to(device).train(was_training)


def _manifest(module: Any, out: Path, layout: list, step_outputs: list[str], source: str | None) -> dict[str, Any]:
    """The manifest's content (see the module docstring)."""
    import onnx

    tok = module.target_tokenizer
    step = onnx.load(str(out / STEP_FILE), load_external_data=False)
    opsets = step.opset_import
    return {
        "format": FORMAT, "version": VERSION,
        "encoder": ENCODER_FILE, "decoder_step": STEP_FILE, "tokenizers": dict(TOKENIZER_FILES),
        # the step's inputs are the state tensors it reads (the exporter drops memory and mask without attention)
        "encoder_inputs": ["tokens", "lengths"], "step_inputs": [i.name for i in step.graph.input],
        "step_outputs": step_outputs, "state": [t.to_dict() for t in layout],
        "attention": "attention" in step_outputs, "vocab_size": tok.vocab_size,
        "special_ids": {"pad": tok.pad_id, "unk": tok.unk_id, "bos": tok.bos_id, "eos": tok.eos_id},
        "max_len_a": float(module.max_len_a), "max_len_b": int(module.max_len_b),
        "batch_size": int(module.batch_size), "strategy": to_spec(module.strategy),
        "model": {"encoder": to_spec(module.encoder, skip=("vocab_size",)),
                  "decoder": to_spec(module.decoder, skip=("vocab_size", "memory_size"))},
        "exporter": "torch.onnx.export(dynamo=False)",
        "opset": next((o.version for o in opsets if o.domain in ("", "ai.onnx")), None),
        "torch": torch.__version__, "source": source,
    }


def _verify(out: Path, encoder_graph: EncoderGraph, step_graph: StepGraph, module: Any) -> None:
    """Both graphs in ONNX Runtime against PyTorch on a batch other than the traced one (other batch
    size and source length): the initial state and one step's outputs, to 1e-4."""
    ort = require("onnxruntime", "ONNX export (verify)")
    tokens, lengths = sample_source(module.source_tokenizer.vocab_size, (3, 9, 5, 1))
    names = [t.name for t in encoder_graph.layout]
    options = ort.SessionOptions()
    options.log_severity_level = 3
    encoder = ort.InferenceSession(str(out / ENCODER_FILE), options, providers=["CPUExecutionProvider"])
    step = ort.InferenceSession(str(out / STEP_FILE), options, providers=["CPUExecutionProvider"])
    expected = encoder_graph(tokens, lengths)
    got = encoder.run(names, {"tokens": tokens.numpy(), "lengths": lengths.numpy()})
    _close("encoder", names, expected, got)
    step_tokens = torch.randint(0, module.target_tokenizer.vocab_size, (tokens.size(0),),
                                generator=torch.Generator().manual_seed(1))
    expected = step_graph(step_tokens, *expected)
    feed = {"tokens": step_tokens.numpy()} | {n: v for n, v in zip(names, got)}
    feed = {i.name: feed[i.name] for i in step.get_inputs()}  # the exporter drops inputs a step never reads
    _close("decoder step", step_graph.output_names(), expected, step.run(step_graph.output_names(), feed))


def _close(graph: str, names: list[str], expected: Sequence[torch.Tensor], got: Sequence[Any]) -> None:
    for name, want, have in zip(names, expected, got):
        if want.dtype == torch.bool:
            ok = bool((torch.from_numpy(have) == want).all())
        else:
            ok = torch.allclose(torch.from_numpy(have), want, atol=1e-4, rtol=1e-4)
        if not ok:
            diff = (torch.from_numpy(have).float() - want.float()).abs().max().item() if have.shape == want.shape \
                else f"shape {have.shape} against {tuple(want.shape)}"
            raise AssertionError(f"ONNX {graph} output {name!r} differs from PyTorch's (largest difference {diff})")


def export_checkpoint(ckpt_path: str | os.PathLike, output: str | os.PathLike, *, opset: int | None = None,
                      verify: bool = True) -> Path:
    """Load a translation checkpoint (``weights_only=True``) and :func:`export_onnx` it.

    Args:
        ckpt_path: a checkpoint written by ``seq2seq fit`` (architecture, tokenizers and decoding
            settings are read from it).
        output: the folder to write.
        opset: the ONNX opset to target, at least :data:`MIN_OPSET` (default: the exporter's).
        verify: check the graphs against PyTorch in ONNX Runtime after writing them.

    Returns:
        The path of the manifest.
    """
    from seq2seq_lightning.checkpoints import load_checkpoint
    from seq2seq_lightning.spec import import_class

    hparams = load_checkpoint(ckpt_path).get("hyper_parameters", {})
    class_path = hparams.get("_class_path") or "seq2seq_lightning.TranslationModule"
    if not class_path.endswith("TranslationModule"):
        raise ValueError(f"ONNX export covers translation models only; {os.fspath(ckpt_path)} holds a {class_path}")
    module = import_class(class_path).load_from_checkpoint(ckpt_path, map_location="cpu")
    return export_onnx(module, output, opset=opset, verify=verify, source=os.fspath(ckpt_path))


def parser() -> argparse.ArgumentParser:
    """The options of ``seq2seq export``."""
    p = argparse.ArgumentParser(
        prog="seq2seq export",
        description="Export a translation checkpoint (built-in rnn encoder and rnn decoder, GRU or LSTM) to ONNX: "
                    "DIR/encoder.onnx (source tokens and lengths -> the decoder's initial state), "
                    "DIR/decoder_step.onnx (one decoding step), both tokenizers and DIR/manifest.json (state "
                    "layout, special ids, length limits, the configured strategy). Run it with "
                    "seq2seq_lightning.export.OnnxTranslator(DIR), which searches with every registered strategy.")
    p.add_argument("--ckpt_path", required=True, metavar="CKPT",
                   help="The checkpoint to export (written by seq2seq fit).")
    p.add_argument("--output", required=True, metavar="DIR",
                   help="The folder to write (created; its files are replaced).")
    p.add_argument("--opset", type=int, default=None, metavar="N",
                   help=f"The ONNX opset to target, {MIN_OPSET} or later (default: the exporter's, 20).")
    p.add_argument("--no-verify", dest="verify", action="store_false",
                   help="Skip running both graphs in ONNX Runtime against PyTorch after writing them.")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``seq2seq export``: returns the exit status (2 with a one-line error for a missing or unsafe
    checkpoint, a model or opset it cannot export, graphs that fail verification, or a missing ``export``
    extra)."""
    import sys

    args = parser().parse_args(argv)
    try:
        path = export_checkpoint(args.ckpt_path, args.output, opset=args.opset, verify=args.verify)
    except (FileNotFoundError, ValueError, ImportError, AssertionError) as exc:  # UnsafeCheckpointError: a ValueError
        if os.environ.get("SEQ2SEQ_DEBUG"):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {path.parent} ({', '.join(sorted(f.name for f in path.parent.iterdir()))})")
    return 0
