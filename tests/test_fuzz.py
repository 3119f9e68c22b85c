"""Property tests (Hypothesis): the text pipeline round-trips arbitrary Unicode; every search strategy
returns well-formed, consistent results on random tiny models."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seq2seq_lightning.data.batching import collate_translation
from seq2seq_lightning.data.text import read_lines
from seq2seq_lightning.data.tokenizer import Tokenizer
from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.greedy import GreedySearch
from seq2seq_lightning.search.sampling import SamplingSearch
from tests.search.toy import BOS, EOS, RandomLM, assert_consistent

# any Unicode except surrogates (not encodable) and the line separator the reader splits on
TEXT = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"), max_size=40)


@settings(max_examples=60, deadline=None)
@given(st.lists(TEXT, min_size=1, max_size=8))
def test_char_pipeline_round_trips_arbitrary_unicode(texts: list[str]) -> None:
    tok = Tokenizer.train(texts, kind="char")
    ids = tok.encode_batch(texts)
    examples = [{"index": i, "source": x + [tok.eos_id], "target": [tok.bos_id, *x, tok.eos_id],
                 "source_text": t, "target_text": t} for i, (x, t) in enumerate(zip(ids, texts))]
    batch = collate_translation(examples, tok.pad_id)
    assert batch.source.shape[0] == len(texts)
    for i, text in enumerate(texts):
        n = int(batch.source_lengths[i])
        row = batch.source[i, : n - 1].tolist()  # drop the EOS
        assert tok.decode(row) == text
        assert int(batch.index[i]) == i
        assert all(x == tok.pad_id for x in batch.source[i, n:].tolist())
    restored = Tokenizer.from_json(tok.to_json())
    assert restored.encode_batch(texts) == ids


LINE = st.text(st.one_of(st.characters(blacklist_categories=("Cs",), blacklist_characters="\n"),
                         st.sampled_from(["\r", "\ufeff", "\x00", " "])), max_size=20)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(LINE, min_size=0, max_size=10), st.booleans(), st.booleans())
def test_reading_lines_keeps_every_line(tmp_path: Path, lines: list[str], crlf: bool, bom: bool) -> None:
    path = tmp_path / "lines.txt"
    body = "".join(line + ("\r\n" if crlf else "\n") for line in lines)  # every line ends, the last one too
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + body.encode("utf-8"))
    # one trailing CR per line is dropped (CRLF endings), and one BOM at the start of the file
    expected = [line if crlf else line.removesuffix("\r") for line in lines]
    if expected and not bom:
        expected[0] = expected[0].removeprefix("\ufeff")
    assert read_lines(path) == expected


STRATEGY = st.one_of(
    st.builds(GreedySearch, min_len=st.integers(0, 2)),
    st.builds(BeamSearch, beam_size=st.integers(1, 5), length_penalty=st.sampled_from([0.0, 0.6, 1.0]),
              n_best=st.just(1), min_len=st.integers(0, 2)),
    st.builds(SamplingSearch, temperature=st.floats(0.3, 2.0), top_k=st.integers(0, 4),
              top_p=st.floats(0.2, 1.0), seed=st.integers(0, 1000), num_samples=st.integers(1, 3)),
)


@settings(max_examples=80, deadline=None)
@given(STRATEGY, st.integers(3, 7), st.integers(1, 5), st.integers(1, 6), st.integers(0, 10_000))
def test_strategies_on_random_tiny_models(strategy, vocab: int, batch: int, max_len: int, seed: int) -> None:
    lm = RandomLM(vocab_size=vocab, seed=seed)
    contexts = list(range(batch))
    results = strategy.search(lm, lm.initial_state(contexts), batch_size=batch, bos=BOS, eos=EOS, max_len=max_len)
    assert len(results) == batch
    min_len = getattr(strategy, "min_len", 0)
    for context, hyps in zip(contexts, results):
        assert hyps, "every row gets at least one hypothesis"
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)  # best first
        for h in hyps:
            assert all(0 <= t < vocab and t != BOS for t in h.tokens)
            assert h.log_prob <= 1e-6 and h.log_prob > float("-inf")
            assert_consistent(h, lambda prefix, c=context: lm.log_probs(c, prefix), max_len, min_len)
