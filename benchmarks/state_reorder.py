"""The RNN decoder's state reorder: source rows shared by a beam's hypotheses against a copy per row.

Before, every ``reorder_state`` of a beam step index-selected the encoder memory, the attention keys and
the mask for each of the N = sentences x beam rows; now a source's K hypotheses share one source row
(``RNNDecoderState.group``), and the source tensors are copied only when a sentence finishes. This runs
both in one process on the same checkpoint: "shared" is the decoder as it is, "copied" the same
decoder with ``reorder_state`` replaced by ``RNNDecoderState.index_select`` (a source row per
hypothesis, the old behaviour). They translate the config's test split in turns, ``--repeats`` times
each; the figures are each one's best round (every round's time is in ``rounds``), the ratio, and
whether every output string is the same. With ``--profile-sentences``, each runs once under
torch.profiler and the self CPU share of ``aten::index_select`` is reported.

    python benchmarks/state_reorder.py -c configs/translation/multi30k_de_en.yaml --ckpt_path CKPT [--quantize int8]
"""

from __future__ import annotations

import statistics

from common import checkpoint_parser, emit
from int8 import bleu, op_shares, test_pairs, timed

from seq2seq_lightning import TranslationModule
from seq2seq_lightning.search.beam import BeamSearch


def load(ckpt: str, quantize: str | None) -> TranslationModule:
    model = TranslationModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True).eval()
    return model.quantize(quantize) if quantize else model


def main() -> None:
    parser = checkpoint_parser(__doc__, sentences=0, beam_size=5, repeats=5, rounds_of="variant")
    parser.add_argument("--quantize", choices=["int8"], default=None, help="run both variants in int8")
    parser.add_argument("--profile-sentences", type=int, default=300, help="sentences profiled per variant (0: none)")
    args = parser.parse_args()

    shared, copied = load(args.ckpt_path, args.quantize), load(args.ckpt_path, args.quantize)
    copied.decoder.reorder_state = lambda state, index: state.index_select(index)  # a source row per hypothesis
    pairs = test_pairs(args.config, shared.hparams.tokenizers)
    if args.sentences:
        pairs = pairs[: args.sentences]
    sources, refs = [s for s, _ in pairs], [t for _, t in pairs]
    name = None if isinstance(shared.strategy, BeamSearch) else "beam"
    strategy = shared.build_strategy(name, beam_size=args.beam_size)
    variants = {"shared": shared, "copied": copied}
    for model in variants.values():
        model.translate(sources[:32], strategy)  # warm-up
    rounds: dict[str, list[float]] = {v: [] for v in variants}
    outputs: dict[str, list[str]] = {}
    for _ in range(args.repeats):
        for v, model in variants.items():
            outputs[v], seconds = timed(model, sources, strategy)
            rounds[v].append(seconds)
    n = len(sources)
    tag = f"{args.config.rsplit('/', 1)[-1].removesuffix('.yaml')}, beam {args.beam_size}" + (
        f", {args.quantize}" if args.quantize else "")
    extra = {"sentences": n, "checkpoint": args.ckpt_path, "batch_size": shared.batch_size, "repeats": args.repeats}
    for v in variants:
        emit("state_reorder", f"{v} source rows ({tag}) sentences/s", n / min(rounds[v]), "sentences/s",
             rounds=[round(t, 3) for t in rounds[v]], median_s=round(statistics.median(rounds[v]), 3), **extra)
    emit("state_reorder", f"shared / copied ({tag}) sentences/s, best rounds", min(rounds["copied"]) /
         min(rounds["shared"]), "ratio", **extra)
    emit("state_reorder", f"shared / copied ({tag}) sentences/s, median rounds",
         statistics.median(rounds["copied"]) / statistics.median(rounds["shared"]), "ratio", **extra)
    emit("state_reorder", f"outputs equal between the two ({tag})",
         sum(a == b for a, b in zip(outputs["shared"], outputs["copied"])) / n, "fraction", **extra)
    emit("state_reorder", f"test BLEU ({tag})", bleu(outputs["shared"], refs), "BLEU", **extra)
    if args.profile_sentences:
        few = sources[: args.profile_sentences]
        for v, model in variants.items():
            emit("state_reorder", f"{v} source rows ({tag}) profile: self CPU share of aten::index_select",
                 op_shares(model, few, strategy).get("aten::index_select", 0.0), "fraction", sentences=len(few))


if __name__ == "__main__":
    main()
