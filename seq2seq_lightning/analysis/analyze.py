"""Search-error analysis: how far greedy, beam and exact search fall short of the model's own best output.

A model is a conditional LM and search looks for its most likely output ŷ. For every test sentence and
every search (greedy, beam of each size, exact search) this compares, under the model, the output's score
with the reference's (forced decoding, :func:`~seq2seq_lightning.analysis.scoring.forced_scores`) and with
exact search's (the question asked by Stahlberg & Byrne, "On NMT Search Errors and Model Errors: Cat Got
Your Tongue?", EMNLP 2019).

Scores. A sequence's score is ``log_prob / L ** length_penalty``, ``L`` its tokens counting the EOS
(``length_penalty=0``: its log-probability), which is what beam and exact search rank by. A reference's
``log_prob`` always includes the EOS term. An output closed at the step limit has no EOS: it is compared as
the search scored it, its ``log_prob`` without an EOS term and ``L`` without the EOS (with
``length_penalty=0`` that is the probability of the prefix, an upper bound on every completion of it, so a
reference that beats it beats every completion too). One output is *better* than another when its tokens
differ and its score is higher by more than :data:`TOLERANCE` (float32 noise between a teacher-forced pass
and step-by-step search).

Verdicts (``sentences.jsonl``), about the output ŷ of the widest beam searched, in this order:

- ``"ok"``: ŷ is the reference, token for token (for captioning: one of the references);
- ``"search_error"``: a better output than ŷ is known: exact search's (with ``exact``), or the reference
  itself (the reference scores above ŷ). A better search changes this output;
- ``"model_error"``: neither: ŷ is not the reference, yet the model scores it at least as high as the
  reference and exact search found nothing better. The model prefers a wrong output; no search fixes it.
"""

from __future__ import annotations

import copy
import inspect
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, Trainer
from lightning.pytorch.utilities import move_data_to_device

from seq2seq_lightning.analysis.plots import progress_bar, write_outputs
from seq2seq_lightning.analysis.scoring import forced_scores, score_token_ids
from seq2seq_lightning.checkpoints import load_checkpoint
from seq2seq_lightning.data.batch import Batch
from seq2seq_lightning.modules.base import Seq2SeqModule
from seq2seq_lightning.search.base import Hypothesis

#: how much higher a score must be to count as better (log-probability units)
TOLERANCE = 1e-4


@dataclass
class Output:
    """One search's output for one sentence (or a reference): tokens (no BOS/EOS), text, scores."""

    tokens: list[int]
    text: str
    log_prob: float
    score: float
    eos: bool = True
    optimal: bool | None = None
    expansions: int | None = None


def length_normalized(log_prob: float, length: int, length_penalty: float) -> float:
    """``log_prob / length ** length_penalty``; ``length`` counts the EOS where there is one."""
    return log_prob if length_penalty == 0 else log_prob / max(length, 1) ** length_penalty


def better(a: Output, b: Output) -> bool:
    """Whether ``a`` is a better output than ``b``: other tokens, score higher by more than TOLERANCE."""
    return a.tokens != b.tokens and a.score > b.score + TOLERANCE


def search_names(beam_sizes: list[int], exact: bool) -> list[tuple[str, int | None]]:
    """``[(name, beam_size)]``: ``greedy`` for size 1, ``beam-K`` for the others, then ``exact``."""
    sizes = sorted(set(beam_sizes))
    if not sizes or sizes[0] < 1:
        raise ValueError(f"beam_sizes must be one or more positive integers, got {beam_sizes}")
    names: list[tuple[str, int | None]] = [("greedy" if k == 1 else f"beam-{k}", k) for k in sizes]
    return names + ([("exact", None)] if exact else [])


def analysis_batches(datamodule: LightningDataModule, limit: int | None) -> tuple[int, Iterator[Batch]]:
    """The number of test examples analysed, and their batches: the first ``limit`` by index (all
    without it), each once, from the data module's test loader."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be a positive number of test examples, got {limit}")
    datamodule.setup("test")
    total = len(datamodule.test_dataloader().dataset)
    wanted = total if limit is None else min(limit, total)

    def batches() -> Iterator[Batch]:
        seen: set[int] = set()
        for batch in datamodule.test_dataloader():
            index = batch.index.tolist()
            keep = [i for i, x in enumerate(index) if x < wanted and x not in seen]
            seen.update(index[i] for i in keep)
            if keep:
                yield batch if len(keep) == len(batch) else batch.rows(keep)
            if len(seen) >= wanted:
                return

    return wanted, batches()


def reference_outputs(module: Seq2SeqModule, batch: Batch, length_penalty: float) -> list[list[Output]]:
    """Every reference of every row, scored by forced decoding (EOS included).

    A batch with ``references`` (captioning: several per image) has each one encoded with the target
    tokenizer and scored; otherwise the row's ``target`` is scored as the data module encoded it.
    """
    tok = module.target_tokenizer
    multi = getattr(batch, "references", None)
    if multi:
        texts = [list(r) for r in multi]
        ids = [[tok.encode(t) for t in row] for row in texts]
        flat = [i for i, row in enumerate(ids) for _ in row]
        scores = iter(score_token_ids(module, batch.rows(flat), [x for row in ids for x in row]))
        scored = [[next(scores) for _ in row] for row in ids]
    else:
        lengths = batch.target_lengths.tolist()
        texts = [[t] for t in batch.target_text]
        ids = [[batch.target[i, 1 : n - 1].tolist()] for i, n in enumerate(lengths)]
        scored = [[s] for s in forced_scores(module, batch)]
    return [[Output(x, t, s.log_prob, length_normalized(s.log_prob, s.tokens, length_penalty))
             for x, t, s in zip(row_ids, row_texts, row_scores)]
            for row_ids, row_texts, row_scores in zip(ids, texts, scored)]


def to_output(module: Seq2SeqModule, hyps: list[Hypothesis], limit: int, length_penalty: float) -> Output:
    """The best hypothesis of a row as an :class:`Output`; closed without EOS when it has ``limit`` tokens."""
    if not hyps:
        return Output([], "", float("-inf"), float("-inf"))
    h = hyps[0]
    eos = len(h.tokens) < limit
    return Output(list(h.tokens), module.target_tokenizer.decode(h.tokens), float(h.log_prob),
                  length_normalized(float(h.log_prob), len(h.tokens) + eos, length_penalty), eos,
                  getattr(h, "optimal", None), getattr(h, "expansions", None))


def analyze(module: Seq2SeqModule, datamodule: LightningDataModule, output: str,
            beam_sizes: list[int] = [1, 2, 4, 8, 16],  # noqa: B006 (read-only; shown by --help)
            exact: bool = False, limit: int | None = None, length_penalty: float = 0.0,
            max_expansions: int | None = None, trainer: Trainer | None = None,
            progress: bool = True) -> list[dict[str, Any]]:
    """Search every test sentence with each search; write the files and return the summary rows.

    The module docstring defines scores, "better" and the verdicts; ``output`` below lists the files and
    columns. The picture and the table also go to the trainer's W&B loggers.

    Args:
        module: the model (eval mode on the trainer's device during the analysis).
        datamodule: gives the test split.
        output: folder (created if needed) for summary.jsonl (one line per search: search, beam_size,
            length_penalty, sentences; bleu: the task's corpus BLEU, 0-100; mean_log_prob of the outputs;
            length_ratio: output / reference target-tokenizer tokens over the corpus, EOS not counted, the
            best-scoring reference where there are several; reference_better: share of sentences whose
            reference the model scores above the output; search_errors: share where exact search found a
            better output (null without exact); empty: share of empty outputs; exact_optimal, expansions:
            exact only; seconds), summary.md (the same table), sentences.jsonl (per sentence: index, source,
            best-scoring reference and its score, each search's output, score and flags, and the verdict
            about the widest beam's output: "ok" = it is the reference; else "search_error" = exact
            search's output or the reference scores above it; else "model_error" = the model scores it at
            least as high as the reference and nothing better was found) and beam_sizes.png (BLEU, search
            errors, length ratio against beam size). "Scores above" means by more than 1e-4; an output
            closed at the step limit is scored without an EOS term.
        beam_sizes: beam sizes to search with; 1 is greedy search (beam search of size 1 finds greedy's output).
        exact: also run exact search (seeded by the widest beam), for ``search_errors``.
        limit: analyse only the first ``limit`` test examples.
        length_penalty: 0 ranks and compares outputs by the model's log-probability (what search errors are
            about); a value > 0 makes beam and exact search rank by ``log_prob / L ** length_penalty`` (``L``
            counting the EOS) and "better" compare that score.
        max_expansions: exact search's budget of expanded prefixes per sentence (None: exact search's own
            default; 0: no budget); a sentence that runs out keeps its best output so far, which is then not
            proven optimal (``exact_optimal``).
        trainer: its device is used and its W&B loggers get the picture and the table.
        progress: show a progress bar over sentences and searches.
    """
    names = search_names(beam_sizes, exact)
    strategies = {name: module.build_strategy("beam", beam_size=k, length_penalty=length_penalty, n_best=1)
                  for name, k in names if k is not None}
    if exact:
        budget = {} if max_expansions is None else {"max_expansions": max_expansions or None}  # 0: no budget
        strategies["exact"] = module.build_strategy("exact", beam_size=max(beam_sizes),
                                                    length_penalty=length_penalty, **budget)
    device = trainer.strategy.root_device if trainer is not None else module.device
    was_training = module.training
    module.to(device).eval()
    try:
        records, outputs, references, seconds = run_searches(module, datamodule, strategies, limit, length_penalty,
                                                             device, progress)
    finally:
        module.train(was_training)
    widest = [name for name, k in names if k is not None][-1]
    for i, record in enumerate(records):
        record.update(sentence_record(references[i], {name: outs[i] for name, outs in outputs.items()}, widest))
    records.sort(key=lambda r: r["index"])  # batches come length-sorted; the file is in test-split order
    rows = [summary_row(name, k, length_penalty, records, seconds[name], exact,
                        corpus_bleu(module, [o.text for o in outputs[name]], references))
            for name, k in names]
    write_outputs(Path(output), rows, records, trainer)
    return rows


@torch.no_grad()
def run_searches(module: Seq2SeqModule, datamodule: LightningDataModule, strategies: dict[str, Any],
                 limit: int | None, length_penalty: float, device: torch.device, progress: bool) -> tuple[
                     list[dict[str, Any]], dict[str, list[Output]], list[list[Output]], dict[str, float]]:
    """Every test batch searched with every strategy: per sentence its index and source, each search's
    outputs, the references, and the seconds each search took (a one-row warm-up goes untimed)."""
    n, batches = analysis_batches(datamodule, limit)
    records: list[dict[str, Any]] = []
    outputs: dict[str, list[Output]] = {name: [] for name in strategies}
    references: list[list[Output]] = []
    seconds = dict.fromkeys(strategies, 0.0)
    with progress_bar(progress) as bar:
        task = bar.add_task("analyze", total=n * len(strategies))
        for batch in batches:
            batch = move_data_to_device(batch, device)
            if not records:
                module.search(batch.rows([0]), next(iter(strategies.values())))  # warm-up
            references += reference_outputs(module, batch, length_penalty)
            limits = module.max_lengths(batch).tolist()
            for name, strategy in strategies.items():
                bar.update(task, description=name)
                start = time.perf_counter()
                found = module.search(batch, strategy)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                seconds[name] += time.perf_counter() - start
                outputs[name] += [to_output(module, h, lim, length_penalty) for h, lim in zip(found, limits)]
                bar.advance(task, len(batch))
            records += [{"index": int(batch.index[i]), "source": module.source_repr(batch, i)}
                        for i in range(len(batch))]
    return records, outputs, references, seconds


def sentence_record(refs: list[Output], outs: dict[str, Output], verdict_of: str) -> dict[str, Any]:
    """A sentence's line of ``sentences.jsonl``: its best-scoring reference, each search's output, the verdict."""
    ref = max(refs, key=lambda r: r.score)
    best = outs.get("exact")
    searches = {}
    for name, out in outs.items():
        entry = {"output": out.text, "tokens": len(out.tokens), "log_prob": out.log_prob, "score": out.score,
                 "eos": out.eos, "reference_better": better(ref, out),
                 "exact_better": None if best is None else better(best, out)}
        if out.optimal is not None or out.expansions is not None:
            entry.update(optimal=out.optimal, expansions=out.expansions)
        searches[name] = entry
    chosen = outs[verdict_of]
    if any(chosen.tokens == r.tokens for r in refs):
        verdict = "ok"
    elif searches[verdict_of]["reference_better"] or searches[verdict_of]["exact_better"]:
        verdict = "search_error"
    else:
        verdict = "model_error"
    record: dict[str, Any] = {"reference": ref.text, "reference_log_prob": ref.log_prob, "reference_score": ref.score,
                              "reference_tokens": len(ref.tokens)}
    if len(refs) > 1:
        record["references"] = [r.text for r in refs]
    return record | {"searches": searches, "verdict": verdict, "verdict_of": verdict_of}


def summary_row(name: str, beam_size: int | None, length_penalty: float, records: list[dict[str, Any]],
                seconds: float, exact: bool, bleu: float | None) -> dict[str, Any]:
    """One line of ``summary.jsonl``, from the per-sentence records (so the two always agree)."""
    entries = [r["searches"][name] for r in records]
    count = max(len(entries), 1)
    ref_tokens = sum(r["reference_tokens"] for r in records)

    def share(flags: list[bool]) -> float:
        return sum(flags) / count

    return {"search": name, "beam_size": beam_size, "length_penalty": length_penalty, "sentences": len(entries),
            "bleu": bleu, "mean_log_prob": sum(e["log_prob"] for e in entries) / count,
            "length_ratio": sum(e["tokens"] for e in entries) / ref_tokens if ref_tokens else None,
            "reference_better": share([e["reference_better"] for e in entries]),
            "search_errors": share([e["exact_better"] for e in entries]) if exact else None,
            "empty": share([e["tokens"] == 0 for e in entries]),
            "exact_optimal": share([bool(e.get("optimal")) for e in entries]) if name == "exact" else None,
            "expansions": sum(e.get("expansions") or 0 for e in entries) / count if name == "exact" else None,
            "seconds": round(seconds, 3)}


def corpus_bleu(module: Seq2SeqModule, hyps: list[str], refs: list[list[Output]]) -> float | None:
    """Corpus BLEU (0-100) with a fresh copy of the module's own test metric: sacreBLEU for translation
    (``bleu["test"]``), BLEU-4 against all references for captioning (``bleu["test_4"]``); None for a
    module with neither."""
    metrics = getattr(module, "bleu", None) or {}
    metric = next((metrics[k] for k in ("test", "test_4") if k in metrics), None)
    if metric is None or not hyps:
        return None
    metric = copy.deepcopy(metric)
    metric.reset()
    metric.update(hyps, [[r.text for r in row] for row in refs])
    return float(metric.compute()) * 100.0


def load_weights(module: Seq2SeqModule, datamodule: LightningDataModule | None, ckpt_path: str) -> None:
    """A checkpoint's weights into ``module`` (``weights_only=True``) and its saved data module state (the
    tokenizers) into ``datamodule``, in place, as test and predict load them."""
    ckpt = load_checkpoint(ckpt_path)
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"])
    key = type(datamodule).__qualname__
    if datamodule is not None and key in ckpt:
        datamodule.load_state_dict(ckpt[key])


def option_help(name: str) -> dict[str, Any]:
    """Default and help of :func:`analyze`'s argument ``name``, read from its signature and ``Args`` section
    (for the command line, which declares ``--beam_sizes`` itself to take space-separated sizes)."""
    default = inspect.signature(analyze).parameters[name].default
    doc = (analyze.__doc__ or "").split("Args:", 1)[-1]
    found = re.search(rf"^\s*{name}: (.*?)(?=^\s*\w+: |\Z)", doc, flags=re.MULTILINE | re.DOTALL)
    text = " ".join(found.group(1).split()) if found else ""
    return {"default": default, "help": text}
