"""callbacks of seq2seq-lightning."""
