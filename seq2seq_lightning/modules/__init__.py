"""modules of seq2seq-lightning."""
