"""The shared Seq2Seq LightningModule: encoder -> conditional LM decoder -> search strategy.

Translation and captioning differ only in how a batch is encoded, how long outputs may be, and
which metrics they report; everything else (loss, perplexity, decoding, predict rows)
lives here.
"""

from __future__ import annotations

import copy
import functools
import inspect
import pickle
import warnings
from collections.abc import Callable
from typing import Any, ClassVar

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor
from torchmetrics import Metric

from seq2seq_lightning.analysis.scoring import score_rows
from seq2seq_lightning.building import build, parse, partial_class, resolve_strategy, target_class
from seq2seq_lightning.checkpoints import refuse
from seq2seq_lightning.data.batch import Batch
from seq2seq_lightning.data.pairs import PairBatch
from seq2seq_lightning.data.tokenizer import Tokenizer
from seq2seq_lightning.decoders.base import Decoder
from seq2seq_lightning.decoders.rnn import RNNDecoder
from seq2seq_lightning.encoders.base import Encoder, EncoderOutput
from seq2seq_lightning.metrics.token_mean import TokenMean
from seq2seq_lightning.registry import ENCODERS, STRATEGIES
from seq2seq_lightning.search.base import Hypothesis, SearchStrategy
from seq2seq_lightning.search.greedy import GreedySearch
from seq2seq_lightning.search.prefix import PrefixDecoder, prefix_limits
from seq2seq_lightning.spec import class_path, plain, to_spec

# Epoch values are logged after torchmetrics has already synchronised them across processes.
warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


def capture_rng_states() -> dict[str, Any]:
    """Python, NumPy and torch random states as plain data (loads with ``weights_only=True``)."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    states: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state(),
                              "numpy": [kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, gauss]}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    import random

    import numpy as np

    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(states["torch"].cpu() if hasattr(states["torch"], "cpu") else states["torch"])
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), int(pos), int(has_gauss), float(cached)))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


class Seq2SeqModule(L.LightningModule):
    """Base of :class:`TranslationModule` and :class:`CaptioningModule` (and of any new task).

    A task subclass builds its encoder, passes it here and implements :meth:`encode`,
    :meth:`max_lengths` and the metric hooks. The target tokenizer is ``self.target_tokenizer``.
    Its hyperparameters are plain data whatever the caller passed: built submodules are stored as
    ``{"class_path", "init_args"}`` specs, so every checkpoint loads with ``weights_only=True``.
    """

    #: what the task feeds its encoder: an encoder of another ``modality`` is refused
    modality: ClassVar[str] = "text"
    #: constructor arguments that say how to decode, not what the network is: at test and predict
    #: time the config's values win over the checkpoint's (the CLI reads this; no task names there)
    decoding_settings: ClassVar[frozenset[str]] = frozenset({"strategy", "num_examples"})
    #: the arguments the module passes each submodule itself (not stored in its spec)
    module_passed: ClassVar[dict[str, tuple[str, ...]]] = {"encoder": ("vocab_size",),
                                                            "decoder": ("vocab_size", "memory_size")}

    def __init__(
        self,
        encoder: Encoder,
        decoder: Callable[[int, int], Decoder] | str | dict | None,
        strategy: SearchStrategy | str | dict | None,
        target_tokenizer: Tokenizer,
        label_smoothing: float,
        optimizer: OptimizerCallable | dict | None,
        lr_scheduler: LRSchedulerCallable | dict | None,
        num_examples: int,
    ) -> None:
        super().__init__()
        self.check_modality(type(encoder))
        self.target_tokenizer = target_tokenizer
        vocab, memory_size = target_tokenizer.vocab_size, encoder.output_size
        # the decoder is registered first: parameter order is the optimizer's and the gradient norm's
        # summation order, so it is part of what makes a seeded run reproduce bit for bit (and a
        # checkpoint of the other order still resumes: on_load_checkpoint remaps its optimizer state)
        if decoder is None:
            self.decoder = RNNDecoder(vocab, memory_size, padding_idx=target_tokenizer.pad_id)
        else:
            self.decoder = build(decoder, Decoder, vocab, memory_size, what="decoder")
        self.encoder = encoder
        self.strategy = GreedySearch() if strategy is None else build(strategy, SearchStrategy, what="strategy")
        self.label_smoothing = label_smoothing
        self.optimizer_factory = parse(optimizer, OptimizerCallable, "optimizer") if isinstance(optimizer, dict) \
            else optimizer
        self.lr_scheduler_factory = parse(lr_scheduler, LRSchedulerCallable, "lr_scheduler") \
            if isinstance(lr_scheduler, dict) else lr_scheduler
        self.num_examples = num_examples
        self._train_acc_seen = False  # whether this epoch's token accuracy has a first measurement
        # token-weighted epoch means, synchronised across processes by torchmetrics in every rank's
        # epoch-end hook and logged as plain values (no collective hides in rank-0-only code)
        self.token_means = torch.nn.ModuleDict({f"{s}_{m}": TokenMean() for s in ("train", "val", "test")
                                                for m in ("loss", "nll", "acc")})

    @classmethod
    def build_encoder(cls, encoder: Any, *args: Any) -> Encoder:
        """The task's encoder from a registry name, spec, callable or instance, passing ``*args`` (what
        the task supplies, such as the source vocabulary size). An encoder of another modality is
        refused before it is built, with a ValueError naming the encoder and the task."""
        target = target_class(encoder, Encoder)
        if target is not None:
            cls.check_modality(target)
        return build(encoder, Encoder, *args, what="encoder")  # what could not be told: checked in __init__

    @classmethod
    def check_modality(cls, encoder_class: type) -> None:
        modality = getattr(encoder_class, "modality", "text")
        if modality != cls.modality:
            name = next((e.name for e in ENCODERS.entries() if e.cls is encoder_class), class_path(encoder_class))
            raise ValueError(f"encoder {name!r} reads {modality} input, but {cls.__name__} feeds its encoder "
                             f"{cls.modality}; choose a {cls.modality} encoder")

    def save_hyperparameters(self, *args: Any, **kwargs: Any) -> None:
        """Lightning's, then every value made plain data: built submodules become their specs
        (``{"class_path", "init_args"}``, without what the module passes them), optimizer and scheduler
        callables theirs, so that no checkpoint carries a pickled object."""
        kwargs.setdefault("frame", inspect.currentframe().f_back)
        super().save_hyperparameters(*args, **kwargs)
        built = {"encoder": self.encoder, "decoder": self.decoder, "strategy": self.strategy}
        for key in list(self._hparams):
            value = self._hparams[key]
            if key in built:
                self._hparams[key] = to_spec(built[key], skip=self.module_passed.get(key, ()))
            elif key in ("optimizer", "lr_scheduler") and callable(value):
                self._hparams[key] = callable_spec(value, key)
            elif not key.startswith("_"):
                self._hparams[key] = plain(value, f"{type(self).__name__}.{key}")
        self._hparams_initial = copy.deepcopy(self._hparams)

    # -- hooks for subclasses --------------------------------------------------------------------
    def encode(self, batch: Batch) -> EncoderOutput:
        raise NotImplementedError

    def max_lengths(self, batch: Batch) -> Tensor:
        """(B,) long: decoding steps allowed per row, EOS included."""
        raise NotImplementedError

    def update_metrics(self, stage: str, hyps: list[str], batch: Batch) -> None:
        raise NotImplementedError

    def log_metrics(self, stage: str) -> None:
        raise NotImplementedError

    def source_repr(self, batch: Batch, i: int) -> str:
        return str(batch.source_text[i])

    def reference_repr(self, batch: Batch, i: int) -> str:
        return str(batch.target_text[i])

    # -- search -------------------------------------------------------------------------------
    def build_strategy(self, strategy: SearchStrategy | str | dict | None = None, **kwargs: Any) -> SearchStrategy:
        """The strategy to search with.

        ``None``: the configured strategy, with ``kwargs`` overriding only the arguments they name
        (``beam_size=2`` keeps its ``length_penalty``). A registry name or class path: that class,
        built from its defaults and ``kwargs``. An instance or a spec dict: as it is.
        """
        return resolve_strategy(self.strategy, strategy, **kwargs)

    @torch.no_grad()
    def search(self, batch: Batch, strategy: SearchStrategy | None = None) -> list[list[Hypothesis]]:
        """Decode a batch. A strategy with ``row_limits`` searches all rows at once, each stopping at
        its own length limit; for others, rows sharing a limit are searched together. Either way a
        row's result never depends on the rest of its batch.

        A batch with ``prefix`` (per row, target ids every output must start with) is searched through
        :class:`~seq2seq_lightning.search.prefix.PrefixDecoder`, each row's limit raised to fit its
        prefix and an EOS; one with ``constraints`` (per row, phrases of target ids every output must
        contain) passes them to a strategy whose ``search`` takes ``constraints``
        (``constrained_beam``), and is refused with a ValueError by any other strategy.
        """
        strategy = strategy or self.strategy
        prefixes: list[list[int]] | None = getattr(batch, "prefix", None)
        constraints: list[list[list[int]]] | None = getattr(batch, "constraints", None)
        if constraints is not None and not any(constraints):
            constraints = None
        if constraints is not None and not takes_constraints(type(strategy)):
            raise ValueError(f"strategy {strategy_name(type(strategy))!r} does not take constraints; search inputs "
                             "with constraints with strategy='constrained_beam' (--model.strategy=constrained_beam)")
        enc = self.encode(batch)
        tok = self.target_tokenizer
        limits_t = self.max_lengths(batch)
        decoder: Any = self.decoder
        if prefixes is not None and any(prefixes):
            limits_t = prefix_limits(limits_t, prefixes)
            decoder = PrefixDecoder(self.decoder)

        def start(rows: list[int], enc_rows: EncoderOutput) -> tuple[Any, dict[str, Any]]:
            """The search state of ``rows`` (their encoder output ``enc_rows``) and their constraints."""
            state = self.decoder.init_state(enc_rows)
            if decoder is not self.decoder:
                state = decoder.wrap(state, [prefixes[i] for i in rows])
            return state, {} if constraints is None else {"constraints": [constraints[i] for i in rows]}

        if _takes_row_limits(type(strategy)):  # one search, each row stopping at its own limit
            state, extra = start(list(range(int(limits_t.numel()))), enc)
            return strategy.search(decoder, state, batch_size=int(limits_t.numel()), bos=tok.bos_id,
                                   eos=tok.eos_id, max_len=int(limits_t.max()), max_lens=limits_t, **extra)
        limits = limits_t.tolist()
        results: list[list[Hypothesis]] = [[] for _ in limits]
        for limit in sorted(set(limits)):
            rows = [i for i, x in enumerate(limits) if x == limit]
            index = torch.tensor(rows, device=enc.memory.device)
            state, extra = start(rows, enc.index_select(index) if len(rows) < len(limits) else enc)
            found = strategy.search(decoder, state, batch_size=len(rows), bos=tok.bos_id, eos=tok.eos_id,
                                    max_len=int(limit), **extra)
            for row, hyps in zip(rows, found):
                results[row] = hyps
        return results

    def detokenize(self, hyps: list[list[Hypothesis]]) -> list[str]:
        return [self.target_tokenizer.decode(h[0].tokens) if h else "" for h in hyps]

    # -- training -----------------------------------------------------------------------------
    def forward(self, batch: Batch) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing -> logits (B, T-1, V), attention (B, T-1, S) or None."""
        return self.decoder(batch.target[:, :-1], self.encode(batch))

    def _loss(self, batch: Batch, stage: str) -> Tensor:
        logits, _ = self(batch)
        gold = batch.target[:, 1:]  # (B, T-1)
        # loss in float32 whatever the precision; one log-softmax serves the loss and the reported nll
        logp = logits.float().reshape(-1, logits.size(-1)).log_softmax(dim=-1)  # (B*(T-1), V)
        pad = self.target_tokenizer.pad_id
        real = gold != pad
        # nothing here waits for the device (no .item(), int() or float() of a tensor): the token
        # count stays a tensor, and the logged values are converted only where they are written
        ntokens = real.sum()
        denominator = ntokens.clamp(min=1)
        nll = F.nll_loss(logp, gold.reshape(-1), ignore_index=pad)
        if self.label_smoothing > 0:
            # the label-smoothed cross-entropy: (1 - e) * nll + e * mean over the vocabulary of -log p
            uniform = -(logp.mean(dim=-1) * real.reshape(-1)).sum() / denominator
            loss = (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform
        else:
            loss = nll
        nll = nll.detach()
        self.token_means[f"{stage}_loss"].update(loss.detach(), ntokens)
        self.token_means[f"{stage}_nll"].update(nll, ntokens)
        if stage != "train" or self._measures_train_accuracy():
            # token accuracy (an argmax over the vocabulary): every evaluation batch, and the training
            # steps the logger records (every log_every_n_steps), not the others
            with torch.no_grad():
                acc = ((logits.argmax(-1) == gold) & real).sum() / denominator
            self.token_means[f"{stage}_acc"].update(acc, ntokens)
        if stage == "train":
            bs = gold.size(0)
            self.log("train/loss_step", loss.detach(), batch_size=bs, on_step=True, on_epoch=False, prog_bar=True)
            self.log("train/ppl_step", nll.clamp(max=50.0).exp(), batch_size=bs, on_step=True, on_epoch=False)
        return loss

    def _measures_train_accuracy(self) -> bool:
        """Whether this training step measures token accuracy: the first of each epoch, and those the
        logger records (every ``log_every_n_steps``, 50 when that is 0); every step without a trainer."""
        trainer = self._trainer
        if trainer is None or not self._train_acc_seen:
            self._train_acc_seen = True
            return True
        every = int(getattr(trainer, "log_every_n_steps", 0) or 50)
        return (trainer.global_step + 1) % every == 0

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._loss(batch, "train")

    def _eval_step(self, batch: Batch, stage: str) -> dict[str, Any]:
        """Loss, search and metrics of one evaluation batch; returns the hypotheses and their strings
        (callbacks such as :class:`~seq2seq_lightning.callbacks.examples.ExampleCollector` read them)."""
        self._loss(batch, stage)
        found = self.search(batch)
        hyps = self.detokenize(found)
        self.update_metrics(stage, hyps, batch)
        return {"hypotheses": found, "outputs": hyps}

    def example_extras(self, batch: Batch, i: int) -> dict[str, Any]:
        """Task-specific fields of a kept example (source token labels, the image, ...)."""
        return {}

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        return self._eval_step(batch, "test")

    def _epoch_end(self, stage: str) -> None:
        means = {m: self.token_means[f"{stage}_{m}"].compute() for m in ("loss", "nll", "acc")}
        self.log(f"{stage}/loss", means["loss"], prog_bar=stage != "train")
        self.log(f"{stage}/ppl", torch.exp(means["nll"].clamp(max=50.0)))
        self.log(f"{stage}/token_accuracy", means["acc"])
        if stage != "train":
            self.log_metrics(stage)

    def metrics_for(self, stage: str) -> list[Metric]:
        """The metrics a stage accumulates over an epoch."""
        return [self.token_means[f"{stage}_{m}"] for m in ("loss", "nll", "acc")]

    def reset_metrics(self, stage: str) -> None:
        """Fresh metric states for an epoch, created outside inference mode so that a later
        no-grad (fit) or inference-mode (validate/test) epoch may update them in place."""
        with torch.inference_mode(False):
            for metric in self.metrics_for(stage):
                metric.reset()

    def on_train_epoch_start(self) -> None:
        self.reset_metrics("train")
        self._train_acc_seen = False

    def on_train_epoch_end(self) -> None:
        self._epoch_end("train")

    def on_validation_epoch_start(self) -> None:
        self.reset_metrics("val")

    def on_validation_epoch_end(self) -> None:
        self._epoch_end("val")

    def on_test_epoch_start(self) -> None:
        self.reset_metrics("test")

    def on_test_epoch_end(self) -> None:
        self._epoch_end("test")

    # -- prediction ---------------------------------------------------------------------------
    def predict_step(self, batch: Batch, batch_idx: int) -> list[dict[str, Any]]:
        """One row per input: index, input, output, score and the n-best list. A batch of pairs
        (``seq2seq score``) is scored instead of searched: :func:`~seq2seq_lightning.analysis.scoring.score_rows`."""
        if isinstance(batch, PairBatch):
            return score_rows(self, batch)
        hyps = self.search(batch)
        tok = self.target_tokenizer
        errors = getattr(batch, "errors", None) or [None] * len(hyps)  # inputs that could not be read
        rows = []
        for i, h in enumerate(hyps):
            source = self.source_repr(batch, i)
            empty = not str(batch.source_text[i]).strip()  # an empty input line gets an empty result
            nbest = [] if empty or errors[i] else nbest_rows(h, tok)
            rows.append({"index": int(batch.index[i]), "input": source,
                         "output": nbest[0]["output"] if nbest else "",
                         "score": nbest[0]["score"] if nbest else None, "nbest": nbest})
            if errors[i]:
                rows[-1]["error"] = errors[i]
        return rows

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load_from_checkpoint(cls, checkpoint_path: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Lightning's loader, always with ``weights_only=True``: a checkpoint carrying pickled
        objects is refused with :class:`~seq2seq_lightning.checkpoints.UnsafeCheckpointError`."""
        kwargs["weights_only"] = True
        try:
            return super().load_from_checkpoint(checkpoint_path, *args, **kwargs)
        except pickle.UnpicklingError as exc:
            raise refuse(checkpoint_path, exc) from None

    def quantize(self, mode: str = "int8") -> Seq2SeqModule:
        """Quantize in place for CPU inference and return the module: dynamic int8 Linear, GRU and LSTM
        layers (:mod:`seq2seq_lightning.modules.quantize`). It still translates, captions, scores and
        predicts with every strategy, but cannot be trained or saved. A module on a GPU or an unknown
        ``mode`` is refused."""
        from seq2seq_lightning.modules.quantize import quantize_module

        return quantize_module(self, mode)

    # -- exact resume --------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Store the random states, so a resumed run draws the same dropout masks."""
        checkpoint["rng_states"] = capture_rng_states()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rng_states")
        if states and self._trainer is not None:  # resuming a run, not loading weights for use
            restore_rng_states(states)
        if self._trainer is not None:
            remap_optimizer_states(checkpoint, [name for name, _ in self.named_parameters()])

    # -- optimisation -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        factory = self.optimizer_factory or _adam
        optimizer = factory(self.parameters())
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        config: dict[str, Any] = {"scheduler": scheduler}
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            config["monitor"] = "val/loss"
        return {"optimizer": optimizer, "lr_scheduler": config}


def nbest_rows(hyps: list[Hypothesis], tokenizer: Tokenizer) -> list[dict[str, Any]]:
    """One input's n-best list as predict writes it (and serve answers it): ``output``, ``score`` and
    ``log_prob`` per hypothesis, best first."""
    return [{"output": tokenizer.decode(h.tokens), "score": float(h.score), "log_prob": float(h.log_prob)}
            for h in hyps]


def remap_optimizer_states(checkpoint: dict[str, Any], names: list[str]) -> None:
    """Renumber a checkpoint's optimizer states, in place, from the parameter order it was saved in
    to ``names`` (this module's order), so that a checkpoint written while the module registered its
    parameters in another order (encoder before decoder) resumes with each parameter's own moments.

    The saved order is the order of the parameters among the checkpoint's ``state_dict`` keys (modules
    save in registration order). Only an optimizer over all parameters in one group, built from
    ``self.parameters()`` as :meth:`configure_optimizers` does, is renumbered; any other layout is left
    as it is.
    """
    wanted = set(names)
    saved = [key for key in checkpoint.get("state_dict", {}) if key in wanted]
    if saved == names or len(saved) != len(names):
        return
    old_index = {name: i for i, name in enumerate(saved)}
    order = [old_index[name] for name in names]  # new index j holds what old index order[j] held
    for opt in checkpoint.get("optimizer_states", []):
        groups = opt.get("param_groups", [])
        if len(groups) != 1 or list(groups[0].get("params", [])) != list(range(len(names))):
            continue
        state = opt.get("state", {})
        opt["state"] = {j: state[i] for j, i in enumerate(order) if i in state}


@functools.cache
def takes_constraints(cls: type) -> bool:
    """Whether a strategy class's ``search`` accepts a ``constraints`` keyword."""
    return "constraints" in inspect.signature(cls.search).parameters


def strategy_name(cls: type) -> str:
    """The registry name of a strategy class, else its class path."""
    return next((e.name for e in STRATEGIES.entries() if e.cls is cls), class_path(cls))


@functools.cache
def _takes_row_limits(cls: type) -> bool:
    """Whether a strategy class asks for per-row limits and its ``search`` accepts ``max_lens`` (a
    subclass of a built-in that overrides ``search`` without it is searched group by group)."""
    return bool(getattr(cls, "row_limits", False)) and "max_lens" in inspect.signature(cls.search).parameters


def callable_spec(value: Any, what: str) -> dict[str, Any] | None:
    """An optimizer or scheduler callable as a spec: a class, or a ``functools.partial`` of one with
    plain keyword arguments. Anything else (a lambda, say) cannot be stored: it is dropped with a
    warning, and a loaded checkpoint trains with the default."""
    func, keywords = value, {}
    if isinstance(value, functools.partial):
        func, keywords = partial_class(value), dict(value.keywords)
    if isinstance(func, type):
        try:
            return {"class_path": class_path(func), "init_args": plain(keywords, what)}
        except TypeError:
            pass
    warnings.warn(f"{what} {value!r} is not a class or a partial of one with plain arguments; it is not stored "
                  "in checkpoints (a loaded model uses the default)", stacklevel=3)
    return None
