"""Tokenizer: special ids, round trips per kind, serialization and determinism."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as HFTokenizer

from seq2seq_lightning.data.tokenizer import Tokenizer

CORPUS = [
    "Hello  world, this is a test!",
    "שלום עולם",  # right-to-left
    "emoji 👩‍💻 and 🎉 with\ttabs",
    "Ünïcödé naïve café — déjà vu",
    "  leading and trailing spaces  ",
    "日本語のテキスト",
    "",
]
CHARS = sorted(set("".join(CORPUS)))
WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "to", "a", "park", "über", "café", "naïve", "42"]


@pytest.fixture(scope="module")
def char_tok() -> Tokenizer:
    return Tokenizer.train(CORPUS, kind="char")


@pytest.fixture(scope="module")
def bpe_tok() -> Tokenizer:
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 9))) for _ in range(400)]
    return Tokenizer.train(texts, kind="bpe", vocab_size=120)


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_special_token_ids(kind: str) -> None:
    tok = Tokenizer.train(CORPUS, kind=kind, vocab_size=100)
    assert (tok.pad_id, tok.unk_id, tok.bos_id, tok.eos_id) == (0, 1, 2, 3)
    assert [tok.id_to_token(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]
    assert tok.kind == kind
    ids = tok.encode("Hello world")
    assert ids and not set(ids) & {0, 2, 3}  # encode adds no specials
    assert tok.decode([tok.bos_id, *ids, tok.eos_id, tok.pad_id, tok.pad_id]) == tok.decode(ids)


def test_unknown_kind_names_the_valid_kinds() -> None:
    with pytest.raises(ValueError, match="char, word, bpe"):
        Tokenizer.train(CORPUS, kind="sentencepiece")


def test_char_round_trip_is_lossless_on_the_corpus(char_tok: Tokenizer) -> None:
    for text in CORPUS:
        assert char_tok.decode(char_tok.encode(text)) == text
    assert len(char_tok.encode("  a  ")) == 5  # spaces are tokens


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(CHARS), max_size=60))
def test_char_round_trip_any_text_of_seen_characters(char_tok: Tokenizer, text: str) -> None:
    ids = char_tok.encode(text)
    assert len(ids) == len(text)
    assert char_tok.unk_id not in ids
    assert char_tok.decode(ids) == text


def test_char_unseen_characters_become_unk(char_tok: Tokenizer) -> None:
    ids = char_tok.encode("a\u0416b")  # Cyrillic Zhe is not in the corpus
    assert ids[1] == char_tok.unk_id and len(ids) == 3
    assert char_tok.decode(ids) == "ab"  # decode drops specials, unk included


def test_special_token_strings_in_text_are_plain_characters(char_tok: Tokenizer) -> None:
    text = "a <s> b </s> <pad>"
    tok = Tokenizer.train([text], kind="char")
    ids = tok.encode(text)
    assert not set(ids) & {0, 1, 2, 3}
    assert tok.decode(ids) == text


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(WORDS + ["tac", "kraps", "dam", "sopa"]), min_size=0, max_size=12))
def test_bpe_round_trip_on_whitespace_normalised_text(bpe_tok: Tokenizer, words: list[str]) -> None:
    text = " ".join(words)  # unseen words made of seen characters still round-trip
    ids = bpe_tok.encode(text)
    assert bpe_tok.unk_id not in ids
    assert bpe_tok.decode(ids) == text


def test_bpe_respects_vocab_size_and_merges(bpe_tok: Tokenizer) -> None:
    assert bpe_tok.vocab_size <= 120
    assert len(bpe_tok.encode("the cat sat on the mat")) < len("the cat sat on the mat")


def test_word_tokenizer_splits_punctuation_and_maps_unknown_words() -> None:
    tok = Tokenizer.train(["the cat, the dog.", "a cat!"], kind="word")
    ids = tok.encode("the cat, a zebra!")
    assert [tok.id_to_token(i) for i in ids] == ["the", "cat", ",", "a", "<unk>", "!"]
    assert tok.decode(tok.encode("the dog.")) == "the dog ."


def test_word_vocab_size_and_min_frequency() -> None:
    texts = ["a a a b b c"] * 3 + ["d"]
    assert tok_tokens(Tokenizer.train(texts, kind="word", vocab_size=6)) == {"a", "b"}
    assert tok_tokens(Tokenizer.train(texts, kind="word", min_frequency=3)) == {"a", "b", "c"}


def tok_tokens(tok: Tokenizer) -> set[str]:
    return {tok.id_to_token(i) for i in range(4, tok.vocab_size)}


def test_lowercase() -> None:
    tok = Tokenizer.train(["Hello World"], kind="char", lowercase=True)
    assert tok.decode(tok.encode("HELLO")) == "hello"
    assert tok.token_to_id("H") is None


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_json_round_trip_gives_identical_encodings(kind: str) -> None:
    tok = Tokenizer.train(CORPUS, kind=kind, vocab_size=100)
    loaded = Tokenizer.from_json(tok.to_json())
    assert loaded == tok and loaded.kind == kind and loaded.vocab_size == tok.vocab_size
    texts = CORPUS + ["a <s> b", "unseen ЖЖ"]
    assert loaded.encode_batch(texts) == tok.encode_batch(texts)
    assert [loaded.decode(ids) for ids in loaded.encode_batch(texts)] == tok.decode_batch(
        tok.encode_batch(texts)
    )
    assert HFTokenizer.from_str(tok.to_json()).get_vocab_size() == tok.vocab_size  # plain HF JSON


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_encode_batch_matches_encode(kind: str) -> None:
    tok = Tokenizer.train(CORPUS, kind=kind, vocab_size=100)
    assert tok.encode_batch(CORPUS) == [tok.encode(t) for t in CORPUS]
    assert tok.decode_batch(tok.encode_batch(CORPUS)) == [tok.decode(tok.encode(t)) for t in CORPUS]


def vocabulary_digests() -> str:
    """Digests of tokenizers trained on many equally frequent tokens (ties everywhere)."""
    texts = [f"w{i} x{i % 7} {chr(0x4E00 + i)}" for i in range(300)]
    return ";".join(
        hashlib.sha256(Tokenizer.train(texts, kind=kind, vocab_size=200).to_json().encode()).hexdigest()
        for kind in ("char", "word", "bpe")
    )


def test_training_is_deterministic_across_processes() -> None:
    # The vocabulary order must not depend on hash-map iteration order, which differs per process.
    script = "from tests.data.test_tokenizer import vocabulary_digests; print(vocabulary_digests())"
    root = Path(__file__).resolve().parents[2]
    outputs = {vocabulary_digests()}
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        result = subprocess.run(
            [sys.executable, "-c", script], env=env, cwd=root, capture_output=True, text=True, check=True
        )
        outputs.add(result.stdout.strip())
    assert len(outputs) == 1


@pytest.mark.parametrize("kind", ["char", "word", "bpe"])
def test_training_twice_gives_the_same_vocabulary(kind: str) -> None:
    texts = [f"w{i % 13} y{i % 5} z{i}" for i in range(200)]
    assert (
        Tokenizer.train(texts, kind=kind, vocab_size=80).to_json()
        == Tokenizer.train(texts, kind=kind, vocab_size=80).to_json()
    )
