"""The Transformer decoder against the decoder contract of seq2seq-lightning."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
from seq2seq_transformer import TransformerDecoder, TransformerDecoderState

from seq2seq_lightning.decoders import Decoder
from seq2seq_lightning.encoders import EncoderOutput
from seq2seq_lightning.search.beam import BeamSearch
from seq2seq_lightning.search.greedy import GreedySearch

V, PAD, BOS, EOS = 13, 0, 1, 2


def encoder_output(lengths: list[int], steps: int = 6, size: int = 16, seed: int = 0) -> EncoderOutput:
    g = torch.Generator().manual_seed(seed)
    memory = torch.randn(len(lengths), steps, size, generator=g)
    mask = torch.arange(steps)[None] < torch.tensor(lengths)[:, None]
    return EncoderOutput(memory=memory, mask=mask, summary=memory.mean(1))


def decoder(memory_size: int = 16, **kwargs: object) -> TransformerDecoder:
    torch.manual_seed(0)
    options = {"d_model": 16, "num_heads": 4, "num_layers": 2, "ff_size": 32} | kwargs
    return TransformerDecoder(V, memory_size, **options).eval()


def run_steps(dec: TransformerDecoder, tokens: torch.Tensor, state: TransformerDecoderState,
              ) -> tuple[torch.Tensor, torch.Tensor, TransformerDecoderState]:
    """log-probs (B, T, V) and attention (B, T, S) of stepping through tokens (B, T)."""
    logps, atts = [], []
    for t in range(tokens.size(1)):
        logp, state = dec.step(tokens[:, t], state)
        logps.append(logp)
        atts.append(dec.last_attention)
    return torch.stack(logps, 1), torch.stack(atts, 1), state


def test_registered_through_the_entry_point() -> None:
    from seq2seq_lightning.registry import DECODERS

    DECODERS.reload()
    assert DECODERS.get("transformer") is TransformerDecoder
    entry = next(e for e in DECODERS.entries() if e.name == "transformer")
    assert entry.dist == "seq2seq-transformer"
    built = DECODERS.build("transformer", vocab_size=11, memory_size=8, d_model=16, num_heads=2)
    assert isinstance(built, Decoder)


@pytest.mark.parametrize("options", [{}, {"positions": "learned"}, {"tie_embeddings": False}, {"num_layers": 1}])
@pytest.mark.parametrize("memory_size", [16, 10])  # 10: the memory is projected to d_model
def test_step_equals_teacher_forcing(options: dict, memory_size: int) -> None:
    dec = decoder(memory_size, **options)
    enc = encoder_output([6, 2, 4], size=memory_size)
    tokens = torch.randint(3, V, (3, 7), generator=torch.Generator().manual_seed(1))
    tokens[:, 0] = BOS
    logits, attention = dec(tokens, enc)
    assert logits.shape == (3, 7, V) and attention.shape == (3, 7, 6)
    logps, atts, state = run_steps(dec, tokens, dec.init_state(enc))
    assert logps.dtype == torch.float32 and state.position == 7
    torch.testing.assert_close(logps, logits.log_softmax(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(atts, attention, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logps.exp().sum(-1), torch.ones(3, 7))


def test_cache_grows_by_one_position_per_step() -> None:
    dec = decoder(max_positions=40)
    state = dec.init_state(encoder_output([6, 3]))
    assert state.position == 0 and state.cache.shape == (2, 2, 2, 4, 16, 4)  # (L, k/v, N, H, capacity, d)
    assert state.memory.shape == (2, 2, 2, 4, 6, 4)
    memory, buffer = state.memory, state.cache
    for t in range(1, 21):
        _, state = dec.step(torch.tensor([BOS, 5]), state)
        assert state.position == t and state.written == [t]
        assert state.memory is memory  # computed once, in init_state
        if t <= 16:
            assert state.cache is buffer  # appended in place
    assert state.cache.size(4) == 32  # grown once, doubling
    for _ in range(20):
        _, state = dec.step(torch.tensor([BOS, 5]), state)
    assert state.position == 40 and state.cache.size(4) == 40  # capped at max_positions


def test_states_stay_valid_when_stepped_twice() -> None:
    """Stepping one state twice (different tokens) never changes the first result's state: the
    second step copies the cache instead of overwriting the position the first one appended."""
    dec = decoder()
    enc = encoder_output([6, 2])
    tokens = torch.tensor([[BOS, 4, 5, 6, 7], [BOS, 8, 9, 10, 11]])
    reference, _, _ = run_steps(dec, tokens, dec.init_state(enc))
    _, state = dec.step(tokens[:, 0], dec.init_state(enc))
    _, first = dec.step(tokens[:, 1], state)
    _, other = dec.step(torch.tensor([12, 12]), state)  # a second step from the same state
    _, again = dec.step(torch.tensor([3, 3]), state)
    assert other.cache is not first.cache and again.cache is not other.cache
    rest, _, _ = run_steps(dec, tokens[:, 2:], first)
    torch.testing.assert_close(rest, reference[:, 2:])
    # and the branches themselves are what a fresh run over their tokens gives
    branch, _, _ = run_steps(dec, torch.tensor([[BOS, 12, 5], [BOS, 12, 9]]), dec.init_state(enc))
    after, _ = dec.step(torch.tensor([5, 9]), other)
    torch.testing.assert_close(after, branch[:, 2])


def test_a_step_does_not_rerun_the_prefix() -> None:
    """Each step projects one new position per layer: the self-attention key/value projection sees
    (N, 1, D) inputs whatever the position."""
    dec = decoder()
    seen: list[int] = []
    hook = dec.layers[0].self_attn.key_value.register_forward_hook(lambda m, i, o: seen.append(i[0].size(1)))
    state = dec.init_state(encoder_output([6, 3]))
    for _ in range(5):
        _, state = dec.step(torch.tensor([4, 5]), state)
    hook.remove()
    assert seen == [1] * 5


def test_attention_is_a_masked_distribution() -> None:
    dec = decoder()
    enc = encoder_output([6, 2, 4])
    _, attention = dec(torch.randint(3, V, (3, 5)), enc)
    torch.testing.assert_close(attention.sum(-1), torch.ones(3, 5))
    assert torch.all(attention[1, :, 2:] == 0) and torch.all(attention[2, :, 4:] == 0)


def test_masked_memory_positions_have_no_effect() -> None:
    dec = decoder()
    enc = encoder_output([6, 2, 4])
    noisy = enc.memory.clone()
    noisy[~enc.mask] = 1e3 * torch.randn(int((~enc.mask).sum()), 16)
    changed = EncoderOutput(noisy, enc.mask, enc.summary)
    tokens = torch.randint(3, V, (3, 5), generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(dec(tokens, changed)[0], dec(tokens, enc)[0])
    a, _, _ = run_steps(dec, tokens, dec.init_state(enc))
    b, _, _ = run_steps(dec, tokens, dec.init_state(changed))
    torch.testing.assert_close(a, b)
    # and a narrower memory (padding cut off) gives the same result for the short row
    short = EncoderOutput(enc.memory[1:2, :2], enc.mask[1:2, :2], enc.summary[1:2])
    torch.testing.assert_close(dec(tokens[1:2], short)[0], dec(tokens, enc)[0][1:2], rtol=1e-5, atol=1e-5)


def test_empty_source_is_finite_and_reads_nothing() -> None:
    dec = decoder()
    enc = encoder_output([6, 0])
    logits, attention = dec(torch.randint(3, V, (2, 4)), enc)
    assert torch.isfinite(logits).all() and torch.all(attention[1] == 0)
    logp, _ = dec.step(torch.tensor([BOS, BOS]), dec.init_state(enc))
    assert torch.isfinite(logp).all() and torch.all(dec.last_attention[1] == 0)


def test_rows_are_independent() -> None:
    dec = decoder()
    enc = encoder_output([6, 2, 4, 5])
    tokens = torch.randint(3, V, (4, 6), generator=torch.Generator().manual_seed(3))
    logits, _ = dec(tokens, enc)
    steps, _, _ = run_steps(dec, tokens, dec.init_state(enc))
    for i in range(4):
        alone = enc.index_select(torch.tensor([i]))
        torch.testing.assert_close(dec(tokens[i : i + 1], alone)[0], logits[i : i + 1], rtol=1e-5, atol=1e-5)
        one, _, _ = run_steps(dec, tokens[i : i + 1], dec.init_state(alone))
        torch.testing.assert_close(one, steps[i : i + 1], rtol=1e-5, atol=1e-5)


def test_reorder_state_picks_repeats_and_drops_rows() -> None:
    dec = decoder()
    enc = encoder_output([6, 2, 4])
    state = dec.init_state(enc)
    for token in (BOS, 5, 7):
        _, state = dec.step(torch.full((3,), token), state)
    index = torch.tensor([2, 2, 0])  # row 1 dropped, row 2 repeated
    moved = dec.reorder_state(state, index)
    assert moved.cache.size(2) == moved.memory.size(2) == moved.key_mask.size(0) == moved.has_memory.size(0) == 3
    assert moved.position == state.position
    a, _ = dec.step(torch.tensor([4, 4, 4]), moved)
    att_a = dec.last_attention
    b, _ = dec.step(torch.tensor([4, 4, 4]), state)
    torch.testing.assert_close(a, b[index])
    torch.testing.assert_close(att_a, dec.last_attention[index])
    # a state reordered right after init_state (beam expansion) works the same way
    wide = dec.reorder_state(dec.init_state(enc), torch.arange(3).repeat_interleave(2))
    c, _ = dec.step(torch.full((6,), BOS), wide)
    d, _ = dec.step(torch.full((3,), BOS), dec.init_state(enc))
    torch.testing.assert_close(c, d.repeat_interleave(2, dim=0))


def test_beam_search_runs() -> None:
    dec = decoder()
    enc = encoder_output([6, 2, 4])
    results = BeamSearch(beam_size=3, n_best=2, length_penalty=1.0).search(
        dec, dec.init_state(enc), batch_size=3, bos=BOS, eos=EOS, max_len=8)
    assert len(results) == 3 and all(len(hyps) == 2 for hyps in results)
    for hyps in results:
        assert hyps[0].score >= hyps[1].score
        for h in hyps:
            assert EOS not in h.tokens and len(h.tokens) <= 8
            assert h.attention is not None and h.attention.size(-1) == 6
    # beam 1 is greedy, and a hypothesis' log_prob is what teacher forcing gives its tokens
    greedy = GreedySearch().search(dec, dec.init_state(enc), batch_size=3, bos=BOS, eos=EOS, max_len=8)
    beam1 = BeamSearch(beam_size=1).search(dec, dec.init_state(enc), batch_size=3, bos=BOS, eos=EOS, max_len=8)
    for row, (g, b) in enumerate(zip(greedy, beam1)):
        assert g[0].tokens == b[0].tokens
        assert g[0].log_prob == pytest.approx(b[0].log_prob, abs=1e-4)
        h = results[row][0]
        ended = h.attention.size(0) == len(h.tokens) + 1  # one attention row per step, EOS included
        target = torch.tensor([[BOS, *h.tokens] + ([EOS] if ended else [])])
        with torch.no_grad():
            logp = dec(target[:, :-1], enc.index_select(torch.tensor([row])))[0].log_softmax(-1)[0]
        assert h.log_prob == pytest.approx(float(logp.gather(1, target[0, 1:, None]).sum()), abs=1e-4)


@pytest.fixture
def one_thread():
    """Tiny models train several times faster on one thread (and far faster on a busy machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_learns_to_copy() -> None:
    """A few hundred updates on copying the source: greedy search then reproduces unseen sources,
    which needs the causal mask, the positions and the cross-attention all working."""
    torch.manual_seed(0)
    emb = torch.nn.Embedding(V, 32)
    dec = TransformerDecoder(V, 32, d_model=32, num_heads=4, num_layers=2, ff_size=64, dropout=0.0)
    params = [*emb.parameters(), *dec.parameters()]
    optimizer = torch.optim.Adam(params, lr=3e-3)
    positions = dec.position_table[:6]

    def encode(src: torch.Tensor) -> EncoderOutput:
        memory = emb(src) + positions[: src.size(1)]
        return EncoderOutput(memory, torch.ones_like(src, dtype=torch.bool), memory.mean(1))

    g = torch.Generator().manual_seed(0)
    for _ in range(300):
        src = torch.randint(3, V, (32, 5), generator=g)
        inputs = torch.cat([torch.full((32, 1), BOS), src], 1)
        gold = torch.cat([src, torch.full((32, 1), EOS)], 1)
        logits, _ = dec(inputs, encode(src))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V), gold.reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    dec.eval()
    src = torch.randint(3, V, (16, 5), generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        found = GreedySearch().search(dec, dec.init_state(encode(src)), batch_size=16, bos=BOS, eos=EOS, max_len=8)
    correct = sum(hyps[0].tokens == row for hyps, row in zip(found, src.tolist()))
    assert correct >= 14, f"copied {correct} of 16"


def test_gradients_are_finite_and_embeddings_tied() -> None:
    dec = decoder().train()
    assert dec.output.weight is dec.embedding.weight and dec.output.bias is None
    untied = decoder(tie_embeddings=False)
    assert untied.output.weight is not untied.embedding.weight and untied.output.bias is not None
    logits, _ = dec(torch.randint(3, V, (3, 5)), encoder_output([6, 0, 4]))
    logits.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in dec.parameters())


def test_invalid_arguments_and_lengths() -> None:
    with pytest.raises(ValueError, match="divide"):
        TransformerDecoder(V, 16, d_model=30, num_heads=4)
    with pytest.raises(ValueError, match="positions"):
        TransformerDecoder(V, 16, positions="rotary")  # type: ignore[arg-type]
    dec = decoder(max_positions=3)
    enc = encoder_output([6])
    with pytest.raises(ValueError, match="max_positions"):
        dec(torch.randint(3, V, (1, 4)), enc)
    state = dec.init_state(enc)
    for _ in range(3):
        _, state = dec.step(torch.tensor([BOS]), state)
    with pytest.raises(ValueError, match="max_positions"):
        dec.step(torch.tensor([BOS]), state)


def test_every_argument_is_documented() -> None:
    doc = inspect.getdoc(TransformerDecoder) or ""
    documented = set(re.findall(r"^\s{4}(\w+):", doc.split("Args:", 1)[1], flags=re.MULTILINE))
    params = inspect.signature(TransformerDecoder.__init__).parameters
    assert set(params) - {"self"} == documented
    assert all(p.annotation is not inspect.Parameter.empty for name, p in params.items() if name != "self")
