"""The Transformer decoder's key/value cache: step cost against position, greedy speed against re-running the prefix.

A randomly initialised ``TransformerDecoder`` of the sizes in
plugins/seq2seq-transformer/configs/multi30k_de_en_transformer.yaml (vocabulary 8000, the memory
of its encoder's width) over random memories of Multi30k-like source lengths, on the CPU:

- step cost: the time of one ``step`` over ``--rows`` rows at position 50 against position 5. With
  the cache only the self-attention over the cached positions grows with the position (linearly);
  the projections, the feed-forward layers and the output layer cost the same at every step.
- greedy decoding: sentences/s with the cache against a baseline decoder that keeps only the prefix
  and runs it all through ``forward()`` at every step. EOS is forbidden (``min_len``), so every row
  runs the full ``--max-len`` steps in both; both must find the same tokens (a row may differ only
  where two random logits tie to within rounding).

Step times are the fastest of ``--repeats`` (medians alongside), greedy times the fastest of
``--greedy-repeats`` runs: on a shared 2-core machine a busy neighbour slows 2-thread runs by
whole time slices, and the minimum is the figure that says what the code costs.

    python benchmarks/transformer_cache.py [--rows 200] [--sentences 120] [--max-len 30] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import yaml
from common import REPO, emit
from seq2seq_transformer import TransformerDecoder, TransformerDecoderState
from torch import Tensor

from seq2seq_lightning.encoders import EncoderOutput
from seq2seq_lightning.search.greedy import GreedySearch

CONFIG = REPO / "plugins" / "seq2seq-transformer" / "configs" / "multi30k_de_en_transformer.yaml"
BOS, EOS = 2, 3


def config_decoder() -> TransformerDecoder:
    """A fresh decoder of the config's sizes, in eval mode."""
    cfg = yaml.safe_load(CONFIG.read_text())
    init = cfg["model"]["init_args"]
    memory_size = init["encoder"].get("init_args", {}).get("d_model", 128)
    vocab = cfg["data"]["init_args"]["vocab_size"]
    return TransformerDecoder(vocab, memory_size, **init["decoder"].get("init_args", {})).eval()


def memory(rows: int, size: int, seed: int = 0) -> EncoderOutput:
    """Random memory (rows, 20, size) with 8..20 real positions per row (Multi30k sources)."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(8, 21, (rows,), generator=g)
    mem = torch.randn(rows, 20, size, generator=g)
    mask = torch.arange(20)[None] < lengths[:, None]
    return EncoderOutput(mem * mask[..., None], mask, mem.mean(1))


@dataclass
class Prefix:
    """The baseline's state: the encoder output and every token so far (BOS first) of each row."""

    enc: EncoderOutput
    tokens: Tensor  # (N, t)


class PrefixRerun:
    """StepDecoder without a cache: each step runs the whole prefix through ``forward()``."""

    def __init__(self, decoder: TransformerDecoder) -> None:
        self.decoder = decoder
        self.last_attention: Tensor | None = None

    def init_state(self, enc: EncoderOutput) -> Prefix:
        return Prefix(enc, torch.zeros(enc.memory.size(0), 0, dtype=torch.long, device=enc.memory.device))

    def step(self, tokens: Tensor, state: Prefix) -> tuple[Tensor, Prefix]:
        prefix = torch.cat([state.tokens, tokens[:, None]], dim=1)  # (N, t+1)
        logits, attention = self.decoder(prefix, state.enc)  # (N, t+1, V), (N, t+1, S)
        self.last_attention = attention[:, -1].float()
        return logits[:, -1].float().log_softmax(dim=-1), Prefix(state.enc, prefix)

    def reorder_state(self, state: Prefix, index: Tensor) -> Prefix:
        return Prefix(state.enc.index_select(index), state.tokens.index_select(0, index))


def advanced(decoder: TransformerDecoder, enc: EncoderOutput, position: int) -> TransformerDecoderState:
    """The search state of ``enc`` after ``position`` steps over random tokens."""
    g = torch.Generator().manual_seed(1)
    state = decoder.init_state(enc)
    for _ in range(position):
        _, state = decoder.step(torch.randint(4, 100, (enc.memory.size(0),), generator=g), state)
    return state


def step_seconds(decoder: TransformerDecoder, states: list[TransformerDecoderState], repeats: int) -> list[list[float]]:
    """Seconds of ``repeats`` steps from each state, interleaved (one of each per round, so that a
    busy machine slows them alike). Each timed step gets its own copy of its state
    (``reorder_state`` with the identity, untimed): stepping one state a second time copies its
    cache rather than overwrite what the first step appended."""
    rows = states[0].key_mask.size(0)
    tokens, identity = torch.randint(4, 100, (rows,), generator=torch.Generator().manual_seed(2)), torch.arange(rows)
    times: list[list[float]] = [[] for _ in states]
    for _ in range(repeats):
        for state, out in zip(states, times):
            fresh = decoder.reorder_state(state, identity)
            start = time.perf_counter()
            decoder.step(tokens, fresh)
            out.append(time.perf_counter() - start)
    return times


def greedy(decoder: Any, enc: EncoderOutput, batch_size: int, max_len: int) -> tuple[float, list[list[int]]]:
    """Seconds to decode every row of ``enc`` greedily in batches, and the tokens found."""
    search, found = GreedySearch(min_len=max_len), []
    start = time.perf_counter()
    for i in range(0, enc.memory.size(0), batch_size):
        part = enc.index_select(torch.arange(i, min(i + batch_size, enc.memory.size(0))))
        hyps = search.search(decoder, decoder.init_state(part), batch_size=part.memory.size(0), bos=BOS, eos=EOS,
                             max_len=max_len)
        found += [h[0].tokens for h in hyps]
    return time.perf_counter() - start, found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200, help="rows per step in the step-cost figure")
    parser.add_argument("--repeats", type=int, default=30, help="timed steps per position")
    parser.add_argument("--sentences", type=int, default=120, help="sentences decoded greedily")
    parser.add_argument("--batch-size", type=int, default=60, help="sentences per greedy batch")
    parser.add_argument("--max-len", type=int, default=30, help="greedy steps per sentence")
    parser.add_argument("--greedy-repeats", type=int, default=2, help="greedy runs of each decoder (fastest kept)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    decoder = config_decoder()
    size = decoder.memory_proj.in_features if isinstance(decoder.memory_proj, torch.nn.Linear) else decoder.d_model
    with torch.inference_mode():
        enc = memory(args.rows, size)
        states = [advanced(decoder, enc, 5), advanced(decoder, enc, 50)]
        step_seconds(decoder, states, 3)  # warm-up
        near, far = step_seconds(decoder, states, args.repeats)
        for position, times in ((5, near), (50, far)):
            emit("transformer_cache", f"step time at position {position} ({args.rows} rows)", min(times) * 1000, "ms",
                 median_ms=round(statistics.median(times) * 1000, 3), repeats=args.repeats)
        emit("transformer_cache", "step time, position 50 / position 5", min(far) / min(near), "ratio", "<= 2",
             rows=args.rows, median_ratio=round(statistics.median(far) / statistics.median(near), 4))
        enc = memory(args.sentences, size, seed=2)
        baseline = PrefixRerun(decoder)
        greedy(decoder, enc.index_select(torch.arange(8)), 8, 5)  # warm-up
        cached_s, rerun_s = [], []
        for _ in range(args.greedy_repeats):  # alternating, the fastest of each kept
            seconds, cached_tokens = greedy(decoder, enc, args.batch_size, args.max_len)
            cached_s.append(seconds)
            seconds, rerun_tokens = greedy(baseline, enc, args.batch_size, args.max_len)
            rerun_s.append(seconds)
        cached_s, rerun_s = min(cached_s), min(rerun_s)
    n = args.sentences
    same = sum(a == b for a, b in zip(cached_tokens, rerun_tokens)) / n
    extra = {"sentences": n, "batch_size": args.batch_size, "max_len": args.max_len}
    emit("transformer_cache", "greedy sentences/s, key/value cache", n / cached_s, "sentences/s", **extra)
    emit("transformer_cache", "greedy sentences/s, prefix re-run through forward()", n / rerun_s, "sentences/s",
         **extra)
    emit("transformer_cache", "greedy speed-up of the cache", rerun_s / cached_s, "ratio", "> 1",
         same_rows=same, **extra)
    if same < 0.99:
        raise SystemExit(f"the cached decoder and the prefix re-run agree on only {same:.1%} of the rows")


if __name__ == "__main__":
    main()
