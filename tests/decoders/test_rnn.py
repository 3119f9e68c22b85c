"""The RNN decoder: step-by-step decoding equals teacher forcing; attention is a masked distribution."""

from __future__ import annotations

import pytest
import torch

from seq2seq_lightning.decoders.rnn import RNNDecoder
from seq2seq_lightning.encoders.base import EncoderOutput


def encoder_output(batch: int = 3, steps: int = 5, size: int = 6) -> EncoderOutput:
    g = torch.Generator().manual_seed(0)
    memory = torch.randn(batch, steps, size, generator=g)
    lengths = torch.tensor([5, 2, 4])[:batch]
    mask = torch.arange(steps)[None] < lengths[:, None]
    return EncoderOutput(memory=memory, mask=mask, summary=torch.randn(batch, size, generator=g))


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("attention,input_feeding", [(True, False), (True, True), (False, False)])
def test_step_equals_teacher_forcing(cell: str, attention: bool, input_feeding: bool) -> None:
    torch.manual_seed(0)
    dec = RNNDecoder(vocab_size=11, memory_size=6, embedding_size=4, hidden_size=7, num_layers=2, cell=cell,
                     attention=attention, input_feeding=input_feeding).eval()
    enc = encoder_output()
    tokens = torch.randint(0, 11, (3, 6))
    logits, attn = dec(tokens, enc)
    state = dec.init_state(enc)
    for t in range(tokens.size(1)):
        logp, state = dec.step(tokens[:, t], state)
        torch.testing.assert_close(logp, logits[:, t].log_softmax(-1), rtol=1e-5, atol=1e-5)
        if attention:
            torch.testing.assert_close(dec.last_attention, attn[:, t], rtol=1e-5, atol=1e-6)
        else:
            assert dec.last_attention is None


def test_attention_is_masked_distribution() -> None:
    torch.manual_seed(0)
    dec = RNNDecoder(vocab_size=9, memory_size=6, hidden_size=5).eval()
    enc = encoder_output()
    _, attn = dec(torch.randint(0, 9, (3, 4)), enc)
    torch.testing.assert_close(attn.sum(-1), torch.ones(3, 4))
    assert torch.all(attn[1, :, 2:] == 0) and torch.all(attn[2, :, 4:] == 0)


def test_reorder_state_repeats_and_drops_rows() -> None:
    torch.manual_seed(0)
    dec = RNNDecoder(vocab_size=9, memory_size=6, hidden_size=5, cell="lstm").eval()
    enc = encoder_output()
    state = dec.init_state(enc)
    _logp, state = dec.step(torch.tensor([2, 2, 2]), state)
    index = torch.tensor([2, 2, 0])
    moved = dec.reorder_state(state, index)
    assert moved.hidden.shape[1] == 3 and moved.memory.shape[0] == 3
    a, _ = dec.step(torch.tensor([5, 5, 5]), moved)
    b, _ = dec.step(torch.tensor([5, 5, 5]), state)
    torch.testing.assert_close(a, b[index])


def test_input_feeding_needs_attention() -> None:
    with pytest.raises(ValueError, match="input_feeding"):
        RNNDecoder(vocab_size=5, memory_size=4, attention=False, input_feeding=True)


def _step_all(dec: RNNDecoder, state, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    logp, _ = dec.step(tokens, state)
    return logp, dec.last_attention


@pytest.mark.parametrize("cell,input_feeding", [("gru", False), ("lstm", True)])
def test_reorder_shares_source_rows_within_a_group(cell: str, input_feeding: bool) -> None:
    """Beam-shaped reorders (runs of K rows per source) keep the source tensors, and step exactly as
    the per-row copies (``index_select``) do; dropping a source cuts them to the rows left."""
    torch.manual_seed(0)
    dec = RNNDecoder(vocab_size=9, memory_size=6, hidden_size=5, cell=cell, input_feeding=input_feeding).eval()
    state = dec.init_state(encoder_output())
    expand = torch.arange(3).repeat_interleave(4)  # (12,) four hypotheses per source
    shared, copied = dec.reorder_state(state, expand), state.index_select(expand)
    assert shared.group == 4 and shared.memory is state.memory and shared.keys is state.keys
    assert copied.group == 1 and copied.memory.shape[0] == 12
    tokens = torch.randint(3, 9, (12,))
    for got, want in zip(_step_all(dec, shared, tokens), _step_all(dec, copied, tokens)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    _, shared = dec.step(tokens, shared)
    _, copied = dec.step(tokens, copied)

    within = torch.tensor([1, 1, 3, 0, 4, 7, 7, 5, 11, 8, 9, 9])  # each run of 4 stays with its source
    a, b = dec.reorder_state(shared, within), copied.index_select(within)
    assert a.group == 4 and a.memory is state.memory
    for got, want in zip(_step_all(dec, a, tokens), _step_all(dec, b, tokens)):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)

    dropped = torch.tensor([2, 0, 0, 1, 9, 9, 8, 10])  # source 1 finished
    a, b = dec.reorder_state(shared, dropped), copied.index_select(dropped)
    assert a.group == 4 and a.memory.shape[0] == 2
    torch.testing.assert_close(a.memory, state.memory[[0, 2]])
    for got, want in zip(_step_all(dec, a, tokens[:8]), _step_all(dec, b, tokens[:8])):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)


def test_reorder_mixing_sources_in_a_run_copies_rows() -> None:
    """Rows whose order does not come in one-source runs fall back to a source row of their own."""
    torch.manual_seed(0)
    dec = RNNDecoder(vocab_size=9, memory_size=6, hidden_size=5).eval()
    state = dec.reorder_state(dec.init_state(encoder_output()), torch.arange(3).repeat_interleave(2))
    mixed = torch.tensor([0, 2, 4, 1, 3])  # five rows from sources 0, 1, 2, 0, 1
    moved = dec.reorder_state(state, mixed)
    assert moved.group == 1 and moved.memory.shape[0] == 5
    torch.testing.assert_close(moved.memory, state.memory[[0, 1, 2, 0, 1]])
    tokens = torch.tensor([3, 4, 5, 6, 7])
    full = dec.reorder_state(state, torch.arange(6))
    got, _ = _step_all(dec, moved, tokens)
    want, _ = _step_all(dec, full, torch.tensor([3, 6, 4, 7, 5, 0]))
    torch.testing.assert_close(got, want[[0, 2, 4, 1, 3]], rtol=1e-6, atol=1e-7)
