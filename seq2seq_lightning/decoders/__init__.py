"""decoders of seq2seq-lightning."""
