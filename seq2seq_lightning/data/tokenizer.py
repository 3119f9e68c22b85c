"""Text tokenizers: a thin wrapper over Hugging Face ``tokenizers`` with fixed special tokens.

Three kinds, all trained from data:

- ``"char"``: every Unicode code point is a token, spaces included. Lossless: decoding the encoding of
  a text gives the text back whenever all of its characters were seen in training (unseen ones
  become ``<unk>``, which decoding drops).
- ``"word"``: whitespace and punctuation split, one token per word (WordLevel). Decoding joins the
  words with single spaces, so it is lossy about spacing.
- ``"bpe"``: byte-pair encoding over Metaspace words (``▁`` marks a space). Decoding restores the
  spacing, so the round trip is exact for whitespace-normalised text (single spaces, no leading or
  trailing space).

Special tokens have fixed ids in every kind: ``<pad>`` 0, ``<unk>`` 1, ``<s>`` 2 (BOS), ``</s>`` 3 (EOS).
``encode`` never adds them and ``decode`` drops them. A text that happens to contain ``"<s>"`` is
encoded as ordinary characters, never as the special token.

The serialized form (``to_json``) is the Hugging Face JSON, so it can also be opened with
``tokenizers.Tokenizer.from_str``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Regex, decoders, models, normalizers, pre_tokenizers, trainers
from tokenizers import Tokenizer as HFTokenizer

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_TOKENS = [PAD, UNK, BOS, EOS]  # their position is their id
KINDS = ("char", "word", "bpe")


class Tokenizer:
    """Text <-> token ids, with ``<pad>``=0, ``<unk>``=1, ``<s>``=2, ``</s>``=3.

    Build one with :meth:`train` or :meth:`from_json`; wrap an existing Hugging Face tokenizer with
    ``Tokenizer(hf_tokenizer)`` (its special tokens must have the ids above).
    """

    def __init__(self, tokenizer: HFTokenizer, kind: str | None = None) -> None:
        for expected_id, token in enumerate(SPECIAL_TOKENS):
            if tokenizer.token_to_id(token) != expected_id:
                raise ValueError(
                    f"special token {token!r} must have id {expected_id}, got {tokenizer.token_to_id(token)}"
                )
        # Special-token strings inside a text are ordinary characters, never control tokens.
        tokenizer.encode_special_tokens = True
        self._tokenizer = tokenizer
        self._kind = kind if kind is not None else _infer_kind(tokenizer)

    # ------------------------------------------------------------------ training
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        kind: str = "char",
        vocab_size: int = 8000,
        min_frequency: int = 1,
        lowercase: bool = False,
    ) -> Tokenizer:
        """Train a tokenizer of ``kind`` ("char", "word" or "bpe") on ``texts``.

        ``vocab_size`` caps the vocabulary, special tokens included; ``min_frequency`` drops rarer
        tokens (char, word) or merges (bpe). The same texts always give the same vocabulary.
        """
        if kind not in KINDS:
            raise ValueError(f"unknown tokenizer kind {kind!r}; valid kinds: {', '.join(KINDS)}")
        if vocab_size < len(SPECIAL_TOKENS):
            raise ValueError(f"vocab_size must be at least {len(SPECIAL_TOKENS)}, got {vocab_size}")
        if kind == "bpe":
            tokenizer = HFTokenizer(models.BPE(unk_token=UNK))
            tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="always")
            tokenizer.decoder = decoders.Metaspace(prepend_scheme="always")
            trainer = trainers.BpeTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=SPECIAL_TOKENS,
                show_progress=False,
            )
        else:
            tokenizer = HFTokenizer(models.WordLevel(unk_token=UNK))
            if kind == "char":
                # Each code point (spaces and newlines too) is its own piece; decoding concatenates.
                tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
                tokenizer.decoder = decoders.Fuse()
            else:
                tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
                    [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
                )
            trainer = trainers.WordLevelTrainer(
                vocab_size=vocab_size,
                min_frequency=min_frequency,
                special_tokens=SPECIAL_TOKENS,
                show_progress=False,
            )
        if lowercase:
            tokenizer.normalizer = normalizers.Lowercase()
        tokenizer.train_from_iterator(_batched(texts), trainer=trainer)
        return cls(tokenizer, kind)

    # ------------------------------------------------------------------ properties
    @property
    def kind(self) -> str:
        return self._kind

    @property
    def vocab_size(self) -> int:
        return self._tokenizer.get_vocab_size(with_added_tokens=True)

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def unk_id(self) -> int:
        return 1

    @property
    def bos_id(self) -> int:
        return 2

    @property
    def eos_id(self) -> int:
        return 3

    @property
    def hf_tokenizer(self) -> HFTokenizer:
        """The wrapped Hugging Face tokenizer."""
        return self._tokenizer

    def id_to_token(self, token_id: int) -> str | None:
        return self._tokenizer.id_to_token(token_id)

    def token_to_id(self, token: str) -> int | None:
        return self._tokenizer.token_to_id(token)

    # ------------------------------------------------------------------ encode / decode
    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, without BOS/EOS."""
        return self._tokenizer.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """``[encode(t) for t in texts]``, computed in parallel by the library."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``; special tokens (pad, unk, BOS, EOS) are dropped."""
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=True)

    def decode_batch(self, batch: Sequence[Sequence[int]]) -> list[str]:
        return self._tokenizer.decode_batch(
            [[int(i) for i in ids] for ids in batch], skip_special_tokens=True
        )

    # ------------------------------------------------------------------ serialization
    def to_json(self) -> str:
        """The Hugging Face JSON of this tokenizer (deterministic for a given vocabulary)."""
        return self._tokenizer.to_str()

    @classmethod
    def from_json(cls, data: str) -> Tokenizer:
        """Inverse of :meth:`to_json`."""
        return cls(HFTokenizer.from_str(data))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Tokenizer):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.to_json())

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(kind={self.kind!r}, vocab_size={self.vocab_size})"


def _batched(texts: Iterable[str], size: int = 1000) -> Iterable[list[str]]:
    batch: list[str] = []
    for text in texts:
        batch.append(text)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _infer_kind(tokenizer: HFTokenizer) -> str:
    if isinstance(tokenizer.model, models.BPE):
        return "bpe"
    if isinstance(tokenizer.decoder, decoders.Fuse):
        return "char"
    return "word"
