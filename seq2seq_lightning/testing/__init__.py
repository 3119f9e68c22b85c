"""The conformance kit: does an encoder, decoder or search strategy keep its contract?

After scikit-learn's ``check_estimator``. Each check builds the class with the given init kwargs on
tiny seeded inputs (CPU, about a second) and raises :class:`AssertionError` whose message names the
class and the broken property, or returns None::

    from seq2seq_lightning.testing import check_decoder, check_encoder, check_strategy

    check_encoder(MyEncoder, hidden_size=16)   # a text encoder is built as MyEncoder(vocab_size=17, hidden_size=16)
    check_decoder(MyDecoder, hidden_size=16)   # built as MyDecoder(vocab_size=13, memory_size=6, hidden_size=16)
    check_strategy(MySearch, beam_size=3)      # searches a seeded toy decoder (ToyStepDecoder)

``vocab_size`` and ``memory_size`` may be given too. An exception raised by the class under test is
reported as a failure of the property being checked. Messages read
``check_decoder(MyDecoder): teacher forcing: ...``; the properties are listed in each check's docstring.
"""

from seq2seq_lightning.testing._common import ProtocolError
from seq2seq_lightning.testing.decoders import check_decoder
from seq2seq_lightning.testing.encoders import check_encoder
from seq2seq_lightning.testing.strategies import ToyStepDecoder, check_strategy

__all__ = ["ProtocolError", "ToyStepDecoder", "check_decoder", "check_encoder", "check_strategy"]
