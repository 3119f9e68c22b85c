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
