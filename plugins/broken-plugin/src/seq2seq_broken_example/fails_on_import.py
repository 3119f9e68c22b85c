"""An encoder module whose import fails, as a plugin with a missing dependency would."""

from seq2seq_broken_example import ERROR_MESSAGE

raise ImportError(ERROR_MESSAGE)
