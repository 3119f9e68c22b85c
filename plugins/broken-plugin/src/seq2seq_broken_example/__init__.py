"""Deliberately broken seq2seq-lightning plugins (see the modules); importing this package is fine."""

ERROR_MESSAGE = "seq2seq-broken-example fails to import on purpose"
