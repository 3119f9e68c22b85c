"""data of seq2seq-lightning."""
