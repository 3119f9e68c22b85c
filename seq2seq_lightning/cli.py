"""The ``seq2seq`` console script: ``fit | validate | test | predict | score | analyze`` (LightningCLI),
``plugins``, ``serve`` (:mod:`seq2seq_lightning.serving.cli`), ``average`` and ``export`` (ONNX)."""

from __future__ import annotations

import inspect
import os
import re
import sys
import warnings
from argparse import RawDescriptionHelpFormatter
from typing import Any, Literal, NoReturn

from jsonargparse import DefaultHelpFormatter
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from seq2seq_lightning import _jsonargparse_names
from seq2seq_lightning.analysis.analyze import load_weights, option_help
from seq2seq_lightning.analysis.scoring import score_record
from seq2seq_lightning.callbacks.examples import ExampleCollector
from seq2seq_lightning.callbacks.tracking import LoggedSaveConfig, prepare_wandb
from seq2seq_lightning.callbacks.writer import PredictionWriter
from seq2seq_lightning.checkpoints import UnsafeCheckpointError, load_checkpoint
from seq2seq_lightning.modules.base import Seq2SeqModule
from seq2seq_lightning.registry import RegistryError
from seq2seq_lightning.trainer import Seq2SeqTrainer

# Registry names (rnn, beam, a plugin's name) work wherever a class path does.
_jsonargparse_names.install()
# A registry name is not a class path yet when jsonargparse first tries to serialize it.
warnings.filterwarnings("ignore", message=r"(?s).*Unable to serialize instance")


def condense_error(message: str, argv: list[str] | None = None) -> str:
    """A parser error without the dumps of whole config values: the key path, the reasons, and
    the option they came from when it can be found on the command line."""
    already = "(given as --" in message  # a subcommand parser's condensed error passing through
    keys, reasons = [], []
    for line in message.splitlines():
        text = line.strip().lstrip("- ").strip()
        key = re.fullmatch(r'Parser key "([^"]+)":', text)
        if key:
            keys.append(key.group(1))
            continue
        if (not text or text.startswith(("Given value", "Subtypes:", "Errors:", "Problem with given class_path",
                                          "Does not validate against any of the Union subtypes"))
                or text == "Expected a <class 'NoneType'>"):
            continue
        reasons.append(text if len(text) <= 300 else text[:297] + "...")
    condensed = "; ".join(dict.fromkeys(reasons)) or message.strip()[:300]
    if keys:
        condensed = f"{'.'.join(keys)}: {condensed}"
    for name in [] if already else re.findall(r"'([A-Za-z_][\w.]*)'", condensed):
        options = [a.split("=")[0] for a in (argv or []) if a.startswith("--") and
                   (a.split("=")[0].endswith("." + name) or a.split("=")[0] == "--" + name)]
        if options:
            return f"{condensed} (given as {options[0]})"
    return condensed


class Seq2SeqArgumentParser(LightningArgumentParser):
    """Parser errors in one short paragraph, not a dump of the whole parsed config."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        super().error(condense_error(message, sys.argv[1:] + _ARGS), ex)


_ARGS: list[str] = []

DESCRIPTION = "seq2seq-lightning: train, evaluate and ship sequence-to-sequence models (text or images in, text out)."

#: the subcommands ``main`` runs with parsers of their own, listed under ``seq2seq --help``
OTHER_SUBCOMMANDS = {
    "serve": "Serve a checkpoint over HTTP (LitServe, dynamic batching).",
    "export": "Export a text-to-text checkpoint to ONNX.",
    "average": "Average the weights of checkpoints into one.",
    "plugins": "List the registered encoders, decoders and strategies.",
}


def other_subcommands_help() -> str:
    """The ``seq2seq --help`` epilog: one line per subcommand outside LightningCLI, laid out as
    LightningCLI's list above it."""
    lines = [f"    {name:<19} {text}" for name, text in OTHER_SUBCOMMANDS.items()]
    return "Other subcommands (serve, export, average: add --help for their options):\n" + "\n".join(lines)


class HelpFormatter(RawDescriptionHelpFormatter, DefaultHelpFormatter):
    """jsonargparse's help formatter, keeping the description's and the epilog's lines as written."""


class Seq2SeqCLI(LightningCLI):
    """LightningCLI with registry names, tokenizers linked from data to model, and ``--output``."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("save_config_callback", LoggedSaveConfig)
        kwargs.setdefault("parser_class", Seq2SeqArgumentParser)
        kwargs.setdefault("trainer_class", Seq2SeqTrainer)  # its ``score`` method is ``seq2seq score``
        super().__init__(Seq2SeqModule, LightningDataModule, *args, subclass_mode_model=True,
                         subclass_mode_data=True, **kwargs)

    def init_parser(self, **kwargs: Any) -> LightningArgumentParser:
        """The main parser, its help listing the other subcommands too (:data:`OTHER_SUBCOMMANDS`)."""
        kwargs.setdefault("description", DESCRIPTION)
        kwargs.setdefault("epilog", other_subcommands_help())
        kwargs.setdefault("formatter_class", HelpFormatter)
        return super().init_parser(**kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        """Lightning's subcommands, ``score`` (forced decoding, :meth:`Seq2SeqTrainer.score`) and ``analyze``
        (search-error analysis, :meth:`Seq2SeqTrainer.analyze`; ``--beam_sizes`` is declared below)."""
        return {**LightningCLI.subcommands(), "score": {"model", "datamodule"},
                "analyze": {"model", "datamodule", "beam_sizes"}}

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.link_arguments("data.tokenizers", "model.init_args.tokenizers", apply_on="instantiate")

    def _prepare_subcommand_parser(self, klass: type, subcommand: str, **kwargs: Any) -> LightningArgumentParser:
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_argument("--output", type=str | None, default=None,
                                help="Where predictions go: .txt for one output per line, .jsonl for JSON lines "
                                     "with input, output, score and the n-best list. Written in input order.")
            parser.set_defaults(return_predictions=False)
            _add_sync_timeout(parser)
            parser.add_argument("--quantize", type=Literal["int8"] | None, default=None,
                                help="int8: after loading --ckpt_path, quantize the model's Linear, GRU and LSTM layers "
                                     "to dynamic int8 (module.quantize) for faster CPU inference; CPU and 32-bit "
                                     "precision only.")
        if subcommand == "score":
            parser.add_argument("--output", type=str, required=True,
                                help="Where the scores go: JSON lines, one per pair in input order, with source, "
                                     "target, log_prob (sum, EOS included), tokens (count, EOS included) and "
                                     "token_log_probs; a pair that cannot be scored gets line, error and nulls.")
            _add_sync_timeout(parser)
        if subcommand == "analyze":  # space-separated sizes (--beam_sizes 1 2 4), default and help from analyze()
            parser.add_argument("--beam_sizes", type=int, nargs="+", **option_help("beam_sizes"))
            self._subcommand_method_arguments[subcommand].append("beam_sizes")
        return parser

    def _parse_ckpt_path(self) -> None:
        """Architecture and tokenizers come from ``--ckpt_path``; decoding settings from the config."""
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        ckpt_path = self.config[subcommand].get("ckpt_path")
        if not ckpt_path or ckpt_path in ("last", "best", "hpc", "registry") or "://" in str(ckpt_path):
            return
        ckpt = load_checkpoint(ckpt_path)  # a missing or unsafe file is a short error here
        hparams = dict(ckpt.get("hyper_parameters", {}))
        hparams.pop("_instantiator", None)
        class_path = hparams.pop("_class_path", None)
        tokenizers = hparams.pop("tokenizers", None)
        for key in decoding_settings(class_path):  # how to decode: the config's values win
            hparams.pop(key, None)
        update: dict[str, Any] = {}
        if class_path:
            update["model"] = {"class_path": class_path, "init_args": hparams}
        data = self.config[subcommand].get("data")
        if tokenizers and data is not None and data.get("class_path"):
            update["data"] = {"class_path": data["class_path"], "init_args": {"tokenizers": tokenizers}}
        if update:
            self.config = self.parser.parse_object({subcommand: update}, self.config)

    def before_instantiate_classes(self) -> None:
        """W&B loggers write inside the run folder (``--trainer.default_root_dir``), offline
        when there are no credentials."""
        subcommand = self.config.get("subcommand")
        trainer = self.config[subcommand].trainer if subcommand else self.config.trainer
        root = trainer.get("default_root_dir") or os.getcwd()
        logger = trainer.get("logger")
        for spec in logger if isinstance(logger, list) else [logger]:
            class_path = spec.get("class_path", "") if hasattr(spec, "get") else ""
            if class_path.endswith("WandbLogger"):
                save_dir = prepare_wandb(root)
                init_args = spec.get("init_args")
                if init_args is not None and init_args.get("save_dir") in (None, "", "."):  # "." is the default
                    init_args["save_dir"] = str(save_dir)

    def _add_examples(self) -> None:
        """Example outputs are collected (and printed at the end of fit and test) in every run."""
        if not any(isinstance(c, ExampleCollector) for c in self.trainer.callbacks):
            self.trainer.callbacks.append(ExampleCollector())

    def before_fit(self) -> None:
        self._add_examples()

    def before_validate(self) -> None:
        self._add_examples()

    def before_test(self) -> None:
        self._add_examples()

    def before_predict(self) -> None:
        if self.config.predict.get("quantize"):
            self._quantize(self.config.predict.quantize)
        output = self.config.predict.get("output")
        if output:
            self.trainer.callbacks.append(PredictionWriter(output, timeout=self.config.predict.sync_timeout))

    def _quantize(self, mode: str) -> None:
        """``--quantize``: the checkpoint's weights loaded here, then the model quantized; predict then runs
        without a checkpoint to load (a quantized model has no float weights to load into)."""
        device, precision = self.trainer.strategy.root_device.type, str(self.trainer.precision)
        if device != "cpu" or precision not in ("32-true", "32"):
            raise ValueError(f"--quantize {mode} runs on the CPU in 32-bit precision (not {device}, {precision}); "
                             "add --trainer.accelerator=cpu and drop --trainer.precision")
        ckpt_path = self.config_init.predict.get("ckpt_path")
        if ckpt_path:
            load_weights(self.model, self.datamodule, ckpt_path)
            self.config_init.predict["ckpt_path"] = None
        self.model.quantize(mode)

    def before_score(self) -> None:
        self.trainer.callbacks.append(PredictionWriter(self.config.score.output, formatter=score_record,
                                                       timeout=self.config.score.sync_timeout))


def _add_sync_timeout(parser: LightningArgumentParser) -> None:
    """``--sync_timeout``: the prediction writer's ``timeout`` (its default is the writer's)."""
    default = inspect.signature(PredictionWriter).parameters["timeout"].default
    parser.add_argument("--sync_timeout", type=float, default=default,
                        help="Distributed runs: seconds a process waits for the others at each step of writing the "
                             "output (start, end of predict, merge) before all stop with an error naming the "
                             "processes that did not come. A process that fails stops the others within a batch.")


def decoding_settings(model_class_path: str | None) -> frozenset[str]:
    """The arguments a module class declares as decoding settings (``Seq2SeqModule.decoding_settings``)."""
    if not model_class_path:
        return Seq2SeqModule.decoding_settings
    from seq2seq_lightning.spec import import_class

    cls = import_class(model_class_path)
    return frozenset(getattr(cls, "decoding_settings", Seq2SeqModule.decoding_settings))


def print_plugins() -> int:
    """``seq2seq plugins``: every registered encoder, decoder and strategy, and every plugin that failed."""
    from rich.console import Console
    from rich.table import Table

    from seq2seq_lightning.registry import REGISTRIES

    # piped or captured output gets wide lines, so names are never folded (and stay grep-able)
    console = Console(width=None if sys.stdout.isatty() else 200)
    table = Table(title="Registered encoders, decoders and strategies")
    for col in ("group", "name", "class", "distribution", "version"):
        table.add_column(col, overflow="fold")
    failures = []
    for registry in REGISTRIES:
        for entry in registry.entries():
            table.add_row(registry.kind, entry.name, entry.class_path, entry.dist, entry.version)
        failures.extend(registry.failures)
    console.print(table)
    if failures:
        bad = Table(title="Plugins that failed to load")
        for col in ("group", "name", "distribution", "entry point", "error"):
            bad.add_column(col, overflow="fold")
        for f in failures:
            kind = {"encoders": "encoder", "decoders": "decoder", "strategies": "strategy"}.get(
                f.group.rsplit(".", 1)[-1], f.group)
            bad.add_row(kind, f.name, f.dist, f.value, f.error)
        console.print(bad)
    return 0


def main(args: list[str] | None = None) -> None:
    argv = sys.argv[1:] if args is None else list(args)
    if argv[:1] == ["plugins"]:
        raise SystemExit(print_plugins())
    if argv[:1] == ["export"]:  # a checkpoint in, an ONNX folder out: its own parser (export/onnx_export.py)
        from seq2seq_lightning.export.onnx_export import main as export

        raise SystemExit(export(argv[1:]))
    if argv[:1] == ["average"]:  # checkpoints in, one checkpoint out, no config: its own parser
        from seq2seq_lightning.export.average import main as average

        raise SystemExit(average(argv[1:]))
    if argv[:1] == ["serve"]:  # needs only a checkpoint, no config: its own parser (seq2seq_lightning.serving.cli)
        from seq2seq_lightning.serving.cli import main as serve

        try:
            raise SystemExit(serve(argv[1:]))
        except (FileNotFoundError, RegistryError, ValueError, UnsafeCheckpointError, RuntimeError) as exc:
            if os.environ.get("SEQ2SEQ_DEBUG"):
                raise
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
    _ARGS[:] = argv if args is not None else []
    try:
        Seq2SeqCLI(args=args)
    except (FileNotFoundError, RegistryError, ValueError, UnsafeCheckpointError) as exc:
        if os.environ.get("SEQ2SEQ_DEBUG"):
            raise
        print(f"error: {condense_error(str(exc), argv)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
