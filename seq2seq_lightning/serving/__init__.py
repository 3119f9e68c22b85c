"""Serving a checkpoint over HTTP (``seq2seq serve``, LitServe): requests batched dynamically.

- :mod:`~seq2seq_lightning.serving.requests`: what a request body may hold, checked before it is queued;
- :mod:`~seq2seq_lightning.serving.api`: the LitAPI (load, prepare a request, one search per batch);
- :mod:`~seq2seq_lightning.serving.stats`: batch counters shared with the HTTP processes (``GET /stats``);
- :mod:`~seq2seq_lightning.serving.limits`: the source length limit, the one ``seq2seq predict`` applies;
- :mod:`~seq2seq_lightning.serving.server`: the LitServer and its graceful SIGTERM;
- :mod:`~seq2seq_lightning.serving.cli`: the ``seq2seq serve`` options.
"""
