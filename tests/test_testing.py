"""The conformance kit: every built-in passes it, and deliberately broken classes fail it by name."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from seq2seq_lightning.decoders.rnn import RNNDecoder
from seq2seq_lightning.encoders import Encoder, EncoderOutput
from seq2seq_lightning.encoders.cnn import CNNEncoder
from seq2seq_lightning.encoders.rnn import RNNEncoder
from seq2seq_lightning.search import Hypothesis, SearchStrategy
from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.constrained import ConstrainedBeamSearch
from seq2seq_lightning.search.exact import ExactSearch
from seq2seq_lightning.search.greedy import GreedySearch
from seq2seq_lightning.search.sampling import SamplingSearch
from seq2seq_lightning.testing import ToyStepDecoder, check_decoder, check_encoder, check_strategy

SMALL_RNN = {"embedding_size": 8, "hidden_size": 6}
SMALL_DECODER = {"embedding_size": 8, "hidden_size": 7}


# -- built-ins pass ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [
    SMALL_RNN,
    {**SMALL_RNN, "cell": "lstm"},
    {**SMALL_RNN, "cell": "lstm", "num_layers": 2, "bidirectional": False},
    {**SMALL_RNN, "num_layers": 2, "dropout": 0.3},
    {},
], ids=["gru", "lstm", "lstm-2-layers-unidirectional", "gru-2-layers-dropout", "defaults"])
def test_rnn_encoder_passes(kwargs: dict) -> None:
    check_encoder(RNNEncoder, **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"backbone": "resnet18", "width_mult": 0.25},
    {"backbone": "resnet18", "width_mult": 0.25, "projection_size": 16, "dropout": 0.2, "trainable_layers": 2},
    {"backbone": "mobilenet_v3_small", "width_mult": 0.5, "weights": "none"},
], ids=["resnet18", "resnet18-projected", "mobilenet"])
def test_cnn_encoder_passes(kwargs: dict) -> None:
    check_encoder(CNNEncoder, **kwargs)


@pytest.mark.parametrize("kwargs", [
    SMALL_DECODER,
    {**SMALL_DECODER, "attention": False},
    {**SMALL_DECODER, "cell": "lstm"},
    {**SMALL_DECODER, "cell": "lstm", "num_layers": 2, "dropout": 0.3},
    {**SMALL_DECODER, "input_feeding": True},
    {**SMALL_DECODER, "cell": "lstm", "input_feeding": True, "attention_size": 5},
    {},
], ids=["gru-attention", "gru-no-attention", "lstm", "lstm-2-layers-dropout", "input-feeding",
        "lstm-input-feeding", "defaults"])
def test_rnn_decoder_passes(kwargs: dict) -> None:
    check_decoder(RNNDecoder, **kwargs)


def test_decoder_sizes_can_be_given() -> None:
    check_decoder(RNNDecoder, vocab_size=40, memory_size=3, **SMALL_DECODER)


@pytest.mark.parametrize("kwargs", [{}, {"min_len": 2}])
def test_greedy_passes(kwargs: dict) -> None:
    check_strategy(GreedySearch, **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"beam_size": 1},
    {"beam_size": 2},
    {"beam_size": 4, "n_best": 4},
    {"beam_size": 3, "length_penalty": 1.0, "n_best": 2},
    {"beam_size": 5, "length_penalty": 0.6, "stopping": "early"},
    {"beam_size": 3, "length_penalty": 1.0, "stopping": "early", "n_best": 3},
    {"beam_size": 3, "length_penalty": -0.5},
    {"beam_size": 4, "min_len": 2, "n_best": 2},
], ids=["1", "2", "4-nbest", "3-penalty", "5-penalty-early", "3-penalty-early-nbest", "3-negative-penalty",
        "4-min-len"])
def test_beam_passes(kwargs: dict) -> None:
    check_strategy(BeamSearch, **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"beam_size": 2},
    {"beam_size": 4, "n_best": 3, "length_penalty": 1.0},
    {"beam_size": 3, "min_len": 2, "stopping": "early"},
], ids=["2", "4-nbest-penalty", "3-min-len-early"])
def test_constrained_beam_passes(kwargs: dict) -> None:
    check_strategy(ConstrainedBeamSearch, **kwargs)


@pytest.mark.parametrize("kwargs", [
    {"seed": 0},
    {"seed": 1, "temperature": 0.7, "top_k": 3, "num_samples": 3},
    {"seed": 2, "top_p": 0.8, "min_len": 1},
], ids=["seed", "top-k-samples", "top-p-min-len"])
def test_sampling_with_a_seed_passes(kwargs: dict) -> None:
    check_strategy(SamplingSearch, **kwargs)


@pytest.mark.parametrize("kwargs", [
    {},
    {"beam_size": 1, "length_penalty": 1.0, "max_expansions": 20, "max_rows": 4},
], ids=["defaults", "penalty-budget-small-blocks"])
def test_exact_passes(kwargs: dict) -> None:
    check_strategy(ExactSearch, **kwargs)


def test_the_kit_leaves_the_global_random_state_alone() -> None:
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    check_decoder(RNNDecoder, **SMALL_DECODER)
    with pytest.raises(AssertionError, match="batch independence"):
        check_strategy(SamplingSearch)  # unseeded: draws from (a fork of) the global generator
    assert torch.equal(torch.rand(3), expected)


def test_the_toy_decoder_is_row_independent_and_checks_the_protocol() -> None:
    toy = ToyStepDecoder(seed=0)
    state = toy.initial_state([0, 1, 2])
    batch, state = toy.step(torch.full((3,), toy.bos), state)
    assert toy.last_attention.shape == (3, toy.src_len)
    alone, _ = toy.step(torch.tensor([toy.bos]), toy.initial_state([1]))
    assert torch.equal(batch[1], alone[0]) and batch.dtype == torch.float32
    torch.testing.assert_close(batch.logsumexp(-1), torch.zeros(3))
    assert float(toy.log_prob(1, [], ended=True)) == float(alone[0, toy.eos])
    with pytest.raises(AssertionError, match="must be BOS"):
        toy.step(torch.tensor([4]), toy.initial_state([0]))
    with pytest.raises(AssertionError, match="2 tokens for a state of 3 rows"):
        toy.step(torch.tensor([4, 5]), state)


# -- broken encoders fail ---------------------------------------------------------------------------
class IgnoresLengths(RNNEncoder):
    """Reads the padding as tokens and calls every position real."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> EncoderOutput:
        memory, hidden = self.rnn(self.embedding(tokens))
        summary = torch.cat(list(hidden[-self.num_directions :]), dim=-1)
        return EncoderOutput(memory, torch.ones(tokens.shape, dtype=torch.bool), summary)


class LeaksPadding(RNNEncoder):
    """A correct mask, but the backward direction reads the padding (no packing)."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> EncoderOutput:
        memory, _ = self.rnn(self.embedding(tokens))
        mask = torch.arange(tokens.size(1))[None] < lengths[:, None]
        return EncoderOutput(memory, mask, memory[:, 0])


class BatchNormalised(RNNEncoder):
    """Centres the summary on the batch mean: a row depends on the others."""

    def forward(self, tokens: Tensor, lengths: Tensor) -> EncoderOutput:
        out = super().forward(tokens, lengths)
        return EncoderOutput(out.memory, out.mask, out.summary - out.summary.mean(0))


class WrongSize(RNNEncoder):
    def __init__(self, vocab_size: int, **kwargs) -> None:
        super().__init__(vocab_size, **kwargs)
        self.output_size += 1


class NaNPadding(RNNEncoder):
    def forward(self, tokens: Tensor, lengths: Tensor) -> EncoderOutput:
        out = super().forward(tokens, lengths)
        return EncoderOutput(out.memory.masked_fill(~out.mask[..., None], float("nan")), out.mask, out.summary)


class DropoutInEval(RNNEncoder):
    """Leaves dropout on in eval mode."""

    def train(self, mode: bool = True) -> DropoutInEval:
        return super().train(True)


class TinyImageEncoder(Encoder):
    """A 16x16-patch linear image encoder; ``batch_stats`` makes it centre the images on the batch mean (broken)."""

    modality = "image"

    def __init__(self, size: int = 8, batch_stats: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, size, kernel_size=16, stride=16)
        self.batch_stats = batch_stats
        self.output_size = size

    def forward(self, images: Tensor) -> EncoderOutput:
        if self.batch_stats:
            images = images - images.mean(0)
        memory = self.conv(images).flatten(2).transpose(1, 2)  # (B, h*w, D)
        mask = torch.ones(memory.shape[:2], dtype=torch.bool)
        return EncoderOutput(memory, mask, memory.mean(1))


def test_a_small_image_encoder_passes() -> None:
    check_encoder(TinyImageEncoder)


@pytest.mark.parametrize(("cls", "kwargs", "prop"), [
    (IgnoresLengths, {}, "mask"),
    (LeaksPadding, {}, "padding has no effect"),
    (BatchNormalised, {}, "batch independence"),
    (WrongSize, {}, "shapes"),
    (NaNPadding, {}, "finite outputs"),
    (DropoutInEval, {"dropout": 0.5}, "deterministic"),
    (TinyImageEncoder, {"batch_stats": True}, "batch independence"),
    (nn.Linear, {}, "subclass of Encoder"),
])
def test_a_broken_encoder_fails_naming_the_property(cls: type, kwargs: dict, prop: str) -> None:
    if issubclass(cls, RNNEncoder):
        kwargs = {**SMALL_RNN, **kwargs}
    with pytest.raises(AssertionError, match=rf"^check_encoder\({cls.__qualname__}\): {prop}: "):
        check_encoder(cls, **kwargs)


def test_an_encoder_that_raises_is_reported_by_property() -> None:
    with pytest.raises(AssertionError, match=r"check_encoder\(RNNEncoder\): builds: raised TypeError"):
        check_encoder(RNNEncoder, no_such_argument=1)


# -- broken decoders fail ---------------------------------------------------------------------------
class ForgetsState(RNNDecoder):
    """Its step forgets the recurrent state: every step starts again from init_state's."""

    def step(self, tokens, state):
        logp, _ = super().step(tokens, state)
        return logp, state


class DoubleLogProbs(RNNDecoder):
    def step(self, tokens, state):
        logp, state = super().step(tokens, state)
        return logp.double(), state


class RawLogits(RNNDecoder):
    """Returns unnormalised scores from step."""

    def step(self, tokens, state):
        logp, state = super().step(tokens, state)
        return logp * 0.5, state


class ReordersWrongly(RNNDecoder):
    """Picks the right number of rows, from the wrong places."""

    def reorder_state(self, state, index):
        return state.index_select(index.flip(0))


class BatchCentred(RNNDecoder):
    """Centres the encoder summary on the batch mean before using it."""

    def init_state(self, enc):
        return super().init_state(EncoderOutput(enc.memory, enc.mask, enc.summary - enc.summary.mean(0)))


class IgnoresMask(RNNDecoder):
    """Attends over every memory position, masked ones included, and exposes no attention."""

    def init_state(self, enc):
        return super().init_state(EncoderOutput(enc.memory, torch.ones_like(enc.mask), enc.summary))

    def forward(self, tokens, enc):
        return super().forward(tokens, enc)[0], None

    def step(self, tokens, state):
        out = super().step(tokens, state)
        self.last_attention = None
        return out


class ShowsMaskedAttention(IgnoresMask):
    """Attends over masked positions and says so in forward's attention."""

    def forward(self, tokens, enc):
        return RNNDecoder.forward(self, tokens, enc)


class UniformAttention(RNNDecoder):
    """last_attention is uniform over the real positions, not the weights the step attended with."""

    def step(self, tokens, state):
        out = super().step(tokens, state)
        self.last_attention = state.mask.float() / state.mask.sum(1, keepdim=True)
        return out


@pytest.mark.parametrize(("cls", "prop"), [
    (ForgetsState, "teacher forcing"),
    (DoubleLogProbs, "step log-probs float32"),
    (RawLogits, "step log-probs normalised"),
    (ReordersWrongly, "reorder_state"),
    (BatchCentred, "batch independence"),
    (IgnoresMask, "masked memory has no effect"),
    (ShowsMaskedAttention, "forward attention"),
    (UniformAttention, "last_attention"),
    (nn.GRU, "subclass of Decoder"),
])
def test_a_broken_decoder_fails_naming_the_property(cls: type, prop: str) -> None:
    with pytest.raises(AssertionError, match=rf"^check_decoder\({cls.__qualname__}\): {prop}: "):
        check_decoder(cls, **SMALL_DECODER)


def test_a_decoder_whose_reorder_ignores_the_index_fails_on_reorder_state() -> None:
    class KeepsRows(RNNDecoder):
        def reorder_state(self, state, index):
            return state

    with pytest.raises(AssertionError, match=r"KeepsRows\): reorder_state: .*raised RuntimeError"):
        check_decoder(KeepsRows, **SMALL_DECODER)


# -- broken strategies fail -------------------------------------------------------------------------
class ReportsScore(BeamSearch):
    """Reports the length-normalised score as the log-probability."""

    def search(self, decoder, state, **kwargs):
        results = super().search(decoder, state, **kwargs)
        return [[Hypothesis(h.tokens, h.score, h.score, h.attention) for h in hyps] for hyps in results]


class KeepsEOS(GreedySearch):
    def search(self, decoder, state, *, eos, max_len, **kwargs):
        results = super().search(decoder, state, eos=eos, max_len=max_len, **kwargs)
        return [[Hypothesis(h.tokens + [eos] * (len(h.tokens) < max_len), h.log_prob, h.score) for h in hyps]
                for hyps in results]


class KeepsBOS(GreedySearch):
    def search(self, decoder, state, *, bos, **kwargs):
        results = super().search(decoder, state, bos=bos, **kwargs)
        return [[Hypothesis([bos, *h.tokens], h.log_prob, h.score) for h in hyps] for hyps in results]


class OneStepTooMany(GreedySearch):
    row_limits = False

    def search(self, decoder, state, *, max_len, **kwargs):
        return super().search(decoder, state, max_len=max_len + 1, **kwargs)


class IgnoresMaxLens(GreedySearch):
    def search(self, decoder, state, *, max_lens=None, **kwargs):
        return super().search(decoder, state, **kwargs)


class DropsLastRow(GreedySearch):
    def search(self, decoder, state, **kwargs):
        return super().search(decoder, state, **kwargs)[:-1]


class WorstFirst(BeamSearch):
    def search(self, decoder, state, **kwargs):
        return [hyps[::-1] for hyps in super().search(decoder, state, **kwargs)]


class SecondChoiceBelowTheFirstRow(SearchStrategy):
    """Greedy for the batch's first row; every other row takes the model's second choice at each step."""

    def search(self, decoder, state, *, batch_size, bos, eos, max_len):
        tokens = torch.full((batch_size,), bos)
        log_prob, out, done = torch.zeros(batch_size), [[] for _ in range(batch_size)], [False] * batch_size
        for _ in range(max_len):
            logp, state = decoder.step(tokens, state)
            tokens = logp.topk(2, dim=-1).indices[torch.arange(batch_size), (torch.arange(batch_size) > 0).long()]
            for b in range(batch_size):
                if not done[b]:
                    log_prob[b] += logp[b, tokens[b]]
                    done[b] = int(tokens[b]) == eos
                    if not done[b]:
                        out[b].append(int(tokens[b]))
            if all(done):
                break
        return [[Hypothesis(out[b], float(log_prob[b]), float(log_prob[b]))] for b in range(batch_size)]


class StartsWithEOS(GreedySearch):
    def search(self, decoder, state, *, bos, eos, **kwargs):
        return super().search(decoder, state, bos=eos, eos=eos, **kwargs)


@pytest.mark.parametrize(("cls", "kwargs", "prop"), [
    (ReportsScore, {"beam_size": 3, "length_penalty": 1.0}, "log_prob"),
    (KeepsEOS, {}, "no EOS in tokens"),
    (KeepsBOS, {}, "no BOS in tokens"),
    (OneStepTooMany, {}, "max_len"),
    (IgnoresMaxLens, {}, "max_len"),
    (DropsLastRow, {}, "one list per row"),
    (WorstFirst, {"beam_size": 3, "n_best": 3}, "best-first"),
    (SecondChoiceBelowTheFirstRow, {}, "batch independence"),
    (StartsWithEOS, {}, "StepDecoder protocol"),
    (SamplingSearch, {}, "batch independence"),  # no seed: nothing makes it reproducible
    (RNNDecoder, {}, "subclass of SearchStrategy"),
])
def test_a_broken_strategy_fails_naming_the_property(cls: type, kwargs: dict, prop: str) -> None:
    with pytest.raises(AssertionError, match=rf"^check_strategy\({cls.__qualname__}\): {prop}: "):
        check_strategy(cls, **kwargs)


def test_the_log_prob_failure_says_what_the_model_gives() -> None:
    with pytest.raises(AssertionError) as info:
        check_strategy(ReportsScore, beam_size=2, length_penalty=1.0)
    message = str(info.value)
    assert "hypothesis 0" in message and "the model's log-probability is" in message and "EOS term" in message
