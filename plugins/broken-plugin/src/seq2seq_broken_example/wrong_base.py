"""A class registered as an encoder that does not subclass ``seq2seq_lightning.encoders.Encoder``."""

from torch import nn


class NotAnEncoder(nn.Module):
    """Looks like an encoder (a module with ``output_size``) but has the wrong base class."""

    output_size = 8

    def forward(self, tokens, lengths):
        raise AssertionError("a plugin with the wrong base class must never be used")
