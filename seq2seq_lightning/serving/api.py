"""The LitServe API of ``seq2seq serve``: a checkpoint's module decoding batches of requests.

Each inference worker loads the checkpoint in :meth:`Seq2SeqAPI.setup`. A request (already checked
by :class:`~seq2seq_lightning.serving.requests.RequestGuard`) becomes one input in
:meth:`~Seq2SeqAPI.decode_request`; the inputs LitServe collects into a batch go through one
``module.search`` in :meth:`~Seq2SeqAPI.predict`, built by the module's own ``make_batch``. An input
that cannot be prepared (an image that does not decode, constraints the strategy cannot take) stays a
:class:`Rejected` row: it is answered with its 4xx error and never reaches the search, so the rest of
its batch is decoded as if it were not there (a row's result never depends on its batch).

Text inputs follow a ``seq2seq predict`` JSON line: the source is cut to ``max_source_len`` tokens
(EOS not counted); ``"prefix"`` and ``"constraints"`` become the batch's ``prefix`` / ``constraints``
target ids (:func:`~seq2seq_lightning.search.prefix.forcing_ids`, as ``translate`` and predict encode
them), so the module's search forces the prefix and passes the phrases to the strategy; an empty or
whitespace-only source gets ``{"output": "", "score": null}`` without a search. The answer is
predict's row: the best of the n-best list as ``output`` and ``score``, and with ``"nbest": true``
the list itself (``output``, ``score``, ``log_prob`` per hypothesis, best first; as many as the
strategy's ``n_best``). Scores that are not finite are answered as null.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import litserve as ls
import torch

from seq2seq_lightning.checkpoints import load_checkpoint
from seq2seq_lightning.modules.base import nbest_rows, strategy_name, takes_constraints
from seq2seq_lightning.search.prefix import forcing_ids
from seq2seq_lightning.serving.stats import BatchStats

log = logging.getLogger(__name__)
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(process)d]: %(message)s"  # the pid tells the workers apart


@dataclass
class Rejected:
    """An input answered with an error instead of a search: HTTP ``status`` and the ``error`` message."""

    status: int
    message: str


@dataclass
class Prepared:
    """An input ready for the module's ``make_batch``: source token ids, or a decoded image; the target
    ids its output must start with and the phrases (target ids) it must contain; whether its answer
    carries the n-best list."""

    value: Any
    prefix: list[int] = field(default_factory=list)
    constraints: list[list[int]] = field(default_factory=list)
    nbest: bool = False


@dataclass
class Empty:
    """An empty source: answered like predict's empty line, without a search."""

    nbest: bool = False


@dataclass
class Answer:
    """A searched input's result: predict's n-best rows (``output``, ``score``, ``log_prob``; best
    first, empty when the search found no hypothesis) and whether the response carries them."""

    nbest: list[dict[str, Any]]
    full: bool = False

    def response(self) -> dict[str, Any]:
        """``{"output", "score"}`` of the best, plus ``"nbest"`` when asked for."""
        best = self.nbest[0] if self.nbest else {"output": "", "score": None}
        answer = {"output": best["output"], "score": best["score"]}
        if self.full:
            answer["nbest"] = self.nbest
        return answer


def finite(value: float) -> float | None:
    """``value``, or None when it is not finite (JSON has no infinity)."""
    return value if math.isfinite(value) else None


def answer_rows(hyps: list[Any], tokenizer: Any) -> list[dict[str, Any]]:
    """Predict's n-best list for one input's hypotheses (:func:`~seq2seq_lightning.modules.base.nbest_rows`),
    scores that are not finite as None."""
    return [{**row, "score": finite(row["score"]), "log_prob": finite(row["log_prob"])}
            for row in nbest_rows(hyps, tokenizer)]


def module_class(hparams: dict[str, Any], ckpt_path: str = "the checkpoint") -> type:
    """The module class a checkpoint was trained as, from its hyperparameters: ``_class_path`` (a
    checkpoint written from Python without the command line: translation when it carries a source
    tokenizer, else captioning)."""
    from seq2seq_lightning.modules.base import Seq2SeqModule
    from seq2seq_lightning.spec import import_class

    path = hparams.get("_class_path")
    if path is None:
        tokenizers = hparams.get("tokenizers") or {}
        task = "TranslationModule" if "source" in tokenizers else "CaptioningModule"
        path = f"seq2seq_lightning.{task}"
    cls = import_class(path)
    if not (isinstance(cls, type) and issubclass(cls, Seq2SeqModule)):
        raise ValueError(f"{ckpt_path}: {path} is not a seq2seq_lightning module")  # noqa: TRY004 - a bad file
    return cls


def check_strategy(hparams: dict[str, Any], strategy: str | None, strategy_kwargs: dict[str, Any]) -> Any:
    """The strategy a worker will build, built here from the checkpoint's strategy spec by the same
    rule (:meth:`Seq2SeqModule.build_strategy <seq2seq_lightning.modules.base.Seq2SeqModule.build_strategy>`,
    which reads only the configured strategy), so a wrong name or keyword fails before any worker starts."""
    from types import SimpleNamespace

    from seq2seq_lightning.building import build
    from seq2seq_lightning.modules.base import Seq2SeqModule
    from seq2seq_lightning.search.base import SearchStrategy

    configured = build(hparams.get("strategy") or "greedy", SearchStrategy, what="strategy")
    return Seq2SeqModule.build_strategy(SimpleNamespace(strategy=configured), strategy, **strategy_kwargs)


def field_of(cls: type) -> str:
    """The request field of a module class: ``"image"`` for image modules, else ``"source"``."""
    return "image" if getattr(cls, "modality", "text") == "image" else "source"


def decode_base64(text: str) -> bytes:
    """Bytes of base64 text, with or without a ``data:...;base64,`` prefix; ValueError if it is not base64."""
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"not base64 ({exc})") from None


def describe(strategy: Any) -> str:
    """``BeamSearch(beam_size=8)``: a strategy's class and the arguments it was built with."""
    args = getattr(strategy, "init_args", {})
    return f"{type(strategy).__name__}({', '.join(f'{k}={v!r}' for k, v in args.items())})"


class Seq2SeqAPI(ls.LitAPI):
    """Serves one checkpoint: ``{"source": text}`` (optionally ``"prefix"``, ``"constraints"``) or
    ``{"image": base64}``, optionally ``"nbest": true`` -> ``{"output", "score"}`` (and ``"nbest"``).

    Args:
        ckpt_path: the checkpoint to serve.
        module_cls: its module class (:func:`module_class`); None reads it from the checkpoint.
        strategy: a strategy registry name or class path to decode with; None keeps the checkpoint's.
        strategy_kwargs: arguments of the strategy; with ``strategy=None`` they override only the
            arguments they name of the checkpoint's strategy (as ``translate(**kwargs)`` does).
        max_source_len: most source tokens (EOS not counted); longer sources are cut (text modules only).
        threads: torch threads of a CPU worker (None leaves torch's default).
        quantize: ``"int8"`` calls ``module.quantize("int8")`` after loading (CPU); None serves as trained.
        max_batch_size: most requests decoded together.
        batch_timeout: seconds a batch waits for more requests before it is decoded.
        stats: shared batch counters (``GET /stats``); None counts nothing.
        loop: the LitServe loop that collects batches (None: LitServe's own).
        log_level: the worker's log level.
    """

    def __init__(self, ckpt_path: str, *, module_cls: type | None = None, strategy: str | None = None,
                 strategy_kwargs: dict[str, Any] | None = None, max_source_len: int | None = None,
                 threads: int | None = None, quantize: str | None = None, max_batch_size: int,
                 batch_timeout: float, stats: BatchStats | None = None, loop: Any = None,
                 log_level: str = "info") -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, loop=loop)
        self.ckpt_path, self.module_cls, self.strategy_name = ckpt_path, module_cls, strategy
        self.log_level = log_level
        self.strategy_kwargs = dict(strategy_kwargs or {})
        self.max_source_len, self.threads, self.quantize = max_source_len, threads, quantize
        self.stats = stats
        self.module: Any = None

    # -- worker start ----------------------------------------------------------------------------
    def setup(self, device: str) -> None:
        """Load the checkpoint on ``device``, quantize it if asked, build the strategy, cap CPU threads."""
        if not logging.getLogger().handlers:  # a spawned worker: log like the main process
            logging.basicConfig(level=self.log_level.upper(), format=LOG_FORMAT)
        if str(device).startswith("cpu") and self.threads:
            torch.set_num_threads(self.threads)
        cls = self.module_cls or module_class(load_checkpoint(self.ckpt_path).get("hyper_parameters", {}),
                                              self.ckpt_path)
        module = cls.load_from_checkpoint(self.ckpt_path, map_location=device).eval()
        if self.quantize:
            module = module.quantize(self.quantize).eval()  # in place, on the CPU (checked by the command line)
        self.module = module
        self.strategy = self.module.build_strategy(self.strategy_name, **self.strategy_kwargs)
        self.takes_constraints = takes_constraints(type(self.strategy))
        self.field = field_of(cls)
        if self.field == "image":
            from seq2seq_lightning.data.images import ImageTransform

            self.image_size = ImageTransform.from_spec(self.module.image_transform).size
        log.info("worker ready: %s (%s) on %s, %s, %d torch thread(s)", self.ckpt_path, cls.__name__, device,
                 describe(self.strategy), torch.get_num_threads())

    # -- one request -----------------------------------------------------------------------------
    def decode_request(self, request):  # unannotated: LitServe would read an annotation as the body's type
        """A checked request body (a dict) -> the input of one row: :class:`Prepared`, :class:`Empty` or
        :class:`Rejected` (never raises, so a bad input cannot fail the batch it is in)."""
        value, nbest = request[self.field], bool(request.get("nbest"))
        if self.field == "source":
            return self._decode_text(value, request.get("prefix"), request.get("constraints"), nbest)
        from seq2seq_lightning.data.images import load_image

        try:
            raw = decode_base64(value)
        except ValueError as exc:
            return Rejected(422, f'"image" is {exc}')
        try:
            return Prepared(load_image(io.BytesIO(raw), draft_size=self.image_size), nbest=nbest)
        except Exception as exc:  # noqa: BLE001 - ImageLoadError, or anything else a decoder raises: this row only
            reason = re.sub(r"^<image>: | <[^<>]* object at 0x[0-9a-f]+>", "", str(exc))  # no in-memory names
            return Rejected(422, f'"image" does not decode as an image ({reason})')

    def _decode_text(self, source: str, prefix: str | None, constraints: list[str] | None, nbest: bool) -> Any:
        """A translation request's row: its source cut to the limit, its prefix and phrases as target ids
        (refused when the strategy takes no constraints, as predict refuses them)."""
        (prefix_ids,), (phrase_ids,) = forcing_ids(self.module.target_tokenizer, 1, [prefix], [constraints])
        if phrase_ids and not self.takes_constraints:
            return Rejected(422, f'"constraints" need a strategy that takes them; this server decodes with '
                                 f'{strategy_name(type(self.strategy))!r}, which does not (serve with '
                                 f'--strategy constrained_beam to meet constraints)')
        if not source.strip():
            return Empty(nbest)
        ids = self.module.source_tokenizer.encode(source)
        ids = ids if self.max_source_len is None else ids[: self.max_source_len]
        return Prepared(ids, prefix_ids, phrase_ids, nbest)

    # -- one batch -------------------------------------------------------------------------------
    def batch(self, inputs: list[Any]) -> list[Any]:
        return list(inputs)

    def predict(self, inputs: Any) -> Any:
        """One search over the prepared rows of a batch; results in input order (a single input without
        batching gives a single result)."""
        if not isinstance(inputs, list):
            return self.predict([inputs])[0]
        rows = [i for i, x in enumerate(inputs) if isinstance(x, Prepared)]
        results: list[Any] = list(inputs)
        if rows:
            module = self.module
            batch = module.make_batch([inputs[i].value for i in rows])
            if any(inputs[i].prefix for i in rows):  # as predict's batches carry them
                batch.prefix = [inputs[i].prefix for i in rows]
            if any(inputs[i].constraints for i in rows):
                batch.constraints = [inputs[i].constraints for i in rows]
            with torch.inference_mode():
                found = module.search(batch, self.strategy)
            for i, hyps in zip(rows, found):
                results[i] = Answer(answer_rows(hyps, module.target_tokenizer), inputs[i].nbest)
        if self.stats is not None:
            self.stats.record(len(rows), empty=sum(isinstance(x, Empty) for x in inputs),
                              rejected=sum(isinstance(x, Rejected) for x in inputs))
        log.debug("batch of %d requests, %d searched", len(inputs), len(rows))
        return results

    def unbatch(self, output: list[Any]) -> list[Any]:
        return list(output)

    def encode_response(self, output):  # unannotated: LitServe would read a return annotation as the response model
        """``{"output", "score"}`` (and ``"nbest"`` when asked for); a rejected input: its status with
        ``{"error": message}``."""
        if isinstance(output, Rejected):
            from fastapi.responses import JSONResponse

            return JSONResponse({"error": output.message}, status_code=output.status)
        if isinstance(output, Empty):
            return Answer([], output.nbest).response()
        return output.response()
