"""Forced decoding: the model's log-probability of a given target, token by token.

One teacher-forced decoder pass per batch scores every row: the decoder reads ``target[:, :-1]``
(``[BOS, y1, ..., yn]``) and the log-softmax of its logits, in float32, is taken at
``target[:, 1:]`` (``[y1, ..., yn, EOS]``). Because running a decoder's ``step`` from
``init_state`` over the same tokens gives the log-softmax of its ``forward`` logits (the decoder
contract), the score of a search's output equals the ``Hypothesis.log_prob`` the search reported
for it (EOS included when the hypothesis ended with EOS).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from seq2seq_lightning.data.batch import Batch
from seq2seq_lightning.data.pairs import PairBatch

if TYPE_CHECKING:
    from seq2seq_lightning.modules.base import Seq2SeqModule

Item = TypeVar("Item")


@dataclass
class ForcedScore:
    """The forced-decoding score of one target.

    Attributes:
        log_prob: sum of log P of the target tokens, EOS included.
        tokens: number of scored tokens, EOS included.
        token_log_probs: log P of each scored token, in order, EOS last.
    """

    log_prob: float
    tokens: int
    token_log_probs: list[float]


@torch.no_grad()
def forced_scores(module: Seq2SeqModule, batch: Batch) -> list[ForcedScore]:
    """One teacher-forced pass over ``batch.target`` -> one :class:`ForcedScore` per row.

    ``batch.target`` is (B, T) long, each row ``[BOS, ..., EOS]`` padded with the target
    tokenizer's pad id; ``batch.target_lengths`` (B,) gives the real lengths (BOS and EOS counted;
    without it, the non-pad positions are counted). The module runs in eval mode (no dropout) for
    the pass and goes back to its previous mode afterwards.
    """
    if batch.target is None:
        raise ValueError("forced_scores needs batch.target ([BOS, ..., EOS] padded); score_token_ids builds it")
    if len(batch) == 0:
        return []
    was_training = module.training
    module.eval()
    try:
        target = batch.target  # (B, T)
        logits, _ = module.decoder(target[:, :-1], module.encode(batch))  # (B, T-1, V)
        logp = logits.float().log_softmax(dim=-1)  # (B, T-1, V), float32 whatever the precision
        gold = target[:, 1:]  # (B, T-1)
        picked = logp.gather(-1, gold.unsqueeze(-1)).squeeze(-1)  # (B, T-1)
        if batch.target_lengths is not None:
            counts = (batch.target_lengths.to(gold.device) - 1).clamp(min=0)  # (B,) BOS not scored
        else:
            counts = (gold != module.target_tokenizer.pad_id).sum(dim=1)  # (B,)
    finally:
        module.train(was_training)
    rows = picked.cpu().tolist()
    # the sum runs in float64 over the float32 terms, so it does not depend on the padding width
    return [ForcedScore(log_prob=float(sum(row[:n])), tokens=int(n), token_log_probs=[float(x) for x in row[:n]])
            for row, n in zip(rows, counts.tolist())]


def target_tensor(module: Seq2SeqModule, target_ids: Sequence[Sequence[int]],
                  device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id lists (no specials) -> ``target`` (B, T) ``[BOS, ..., EOS]`` padded with the pad id,
    and ``target_lengths`` (B,), on ``device`` (the module's by default)."""
    tok = module.target_tokenizer
    seqs = [[tok.bos_id, *map(int, ids), tok.eos_id] for ids in target_ids]
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.long)
    target = torch.full((len(seqs), int(lengths.max()) if seqs else 2), tok.pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        target[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    device = module.device if device is None else device
    return target.to(device), lengths.to(device)


def score_token_ids(module: Seq2SeqModule, batch_without_target: Batch,
                    target_ids: Sequence[Sequence[int]]) -> list[ForcedScore]:
    """Forced scores of ``target_ids`` (one id list per row of the batch, without BOS/EOS; an empty
    list scores the EOS alone) given the batch's inputs.

    BOS and EOS are added, the targets padded and set as ``target`` of a copy of the batch (the
    batch passed in is left as it is), then :func:`forced_scores` scores them in one pass.
    """
    if len(target_ids) != len(batch_without_target):
        raise ValueError(f"{len(target_ids)} targets for a batch of {len(batch_without_target)} rows")
    if not target_ids:
        return []
    target, lengths = target_tensor(module, target_ids)
    batch = dataclasses.replace(batch_without_target, target=target, target_lengths=lengths)
    return forced_scores(module, batch)


def score_texts(module: Seq2SeqModule, inputs: Sequence[Item], targets: Sequence[str],
                make_batch: Callable[[list[Item]], Batch], batch_size: int,
                input_lengths: Sequence[int] | None = None) -> list[ForcedScore]:
    """Forced scores of target texts given their inputs, in input order, batched.

    Each target is scored as the target tokenizer encodes it (an empty one: the EOS alone). Rows
    are sorted by (input length, target length) and cut into batches of ``batch_size``;
    ``make_batch`` turns a list of inputs into a batch without targets on the module's device.
    """
    if len(inputs) != len(targets):
        raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets; give one target per input")
    target_ids = module.target_tokenizer.encode_batch(list(targets)) if targets else []
    lengths = input_lengths if input_lengths is not None else [0] * len(inputs)
    order = sorted(range(len(inputs)), key=lambda i: (lengths[i], len(target_ids[i])))
    out: list[ForcedScore | None] = [None] * len(inputs)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = make_batch([inputs[i] for i in rows])
        for i, score in zip(rows, score_token_ids(module, batch, [target_ids[i] for i in rows])):
            out[i] = score
    return out  # type: ignore[return-value]


def score_rows(module: Seq2SeqModule, batch: PairBatch) -> list[dict[str, Any]]:
    """The output rows of a batch of pairs (``seq2seq score``), in index order: ``index``, ``source``,
    ``target``, ``log_prob``, ``tokens``, ``token_log_probs``; a row that cannot be scored gets
    ``line`` (1-based), ``error`` and nulls."""
    errors = batch.errors or [None] * len(batch)
    good = [i for i, e in enumerate(errors) if e is None]
    scores = forced_scores(module, batch if len(good) == len(batch) else batch.rows(good)) if good else []
    rows = []
    for i, score in zip(good, scores):
        rows.append({"index": int(batch.index[i]), "source": module.source_repr(batch, i),
                     "target": batch.target_text[i], "log_prob": score.log_prob, "tokens": score.tokens,
                     "token_log_probs": score.token_log_probs})
    for i, error in enumerate(errors):
        if error is not None:
            index = int(batch.index[i])
            rows.append({"index": index, "line": index + 1, "error": error,
                         "source": batch.source_text[i] or None, "target": batch.target_text[i] or None,
                         "log_prob": None, "tokens": None, "token_log_probs": None})
    return sorted(rows, key=lambda row: row["index"])


def score_record(row: dict[str, Any]) -> str:
    """One JSON line of ``seq2seq score`` output for a row of :func:`score_rows` (no trailing newline)."""
    record = {k: v for k, v in row.items() if k != "index"}
    return json.dumps(record, ensure_ascii=False)
