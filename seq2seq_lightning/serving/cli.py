"""``seq2seq serve``: a trained checkpoint behind an HTTP API (LitServe), requests batched dynamically.

    seq2seq serve --ckpt_path runs/dates/checkpoints/last.ckpt --port 8000
    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"source": "25th of June, 2009"}'
    # {"output": "2009-06-25", "score": -0.0123}

The options are the arguments of :func:`serve`; ``seq2seq serve --help`` prints them with their help.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Literal

log = logging.getLogger("seq2seq_lightning.serving")


def serve(
    ckpt_path: str,
    port: int = 8000,
    host: Literal["127.0.0.1", "0.0.0.0", "::"] = "127.0.0.1",
    strategy: str | None = None,
    strategy_kwargs: dict[str, Any] | None = None,
    max_batch_size: int = 16,
    batch_timeout: float = 0.002,
    max_source_len: int | None = None,
    config: str | None = None,
    max_request_bytes: int = 8 * 2**20,
    quantize: Literal["int8"] | None = None,
    accelerator: Literal["auto", "cpu", "cuda"] = "auto",
    workers: int = 1,
    threads: int | None = None,
    timeout: float = 30.0,
    fast_queue: bool = False,
    graceful_timeout: float = 30.0,
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info",
    access_log: bool = False,
) -> int:
    """Serve a checkpoint over HTTP: POST /predict {"source": text} (captioning: {"image": base64 PNG or
    JPEG}) answers {"output": text, "score": float}, as seq2seq predict answers that JSON line; a
    translation request may add "prefix" (text the output starts with) and "constraints" (phrases it
    contains; --strategy constrained_beam), any request "nbest": true (the answer adds predict's n-best
    list). GET /health says "ok" once the workers are ready; GET /stats counts the batches decoded, by
    size. A malformed request gets a 4xx {"error": ...} and never joins a batch. SIGTERM answers the
    requests in flight, then exits 0.

    Args:
        ckpt_path: the checkpoint to serve (translation or captioning; it carries its tokenizers).
        port: the TCP port to listen on.
        host: the address to listen on; 0.0.0.0 (or ::) accepts connections from other machines.
        strategy: decode with this strategy (a registry name such as greedy, beam, sampling, or a class
            path), built from its defaults and --strategy_kwargs. Default: the checkpoint's strategy.
        strategy_kwargs: strategy arguments as a JSON or YAML mapping, e.g. '{"beam_size": 8}'. Without
            --strategy they override only the arguments they name of the checkpoint's strategy (its
            length_penalty stays), as translate(beam_size=8) does. n_best sets the length of the
            n-best list a request with "nbest": true gets.
        max_batch_size: most requests decoded together in one search.
        batch_timeout: seconds a batch waits for more requests once the first has arrived; 0 decodes
            what is queued at once. Requests that arrive while a batch is decoded form the next one.
        max_source_len: most source tokens of a request (EOS not counted); longer sources are cut, as
            seq2seq predict cuts them. Default: the data module's limit, read from --config, else from the
            config.yaml saved with the training run, else the TranslationDataModule default (200).
        config: the config seq2seq predict would be given (-c); only its data module's max_source_len is read.
        max_request_bytes: the largest request body; a larger one gets 413.
        quantize: int8 serves module.quantize("int8") (dynamic int8 weights, CPU only).
        accelerator: where the workers decode; auto picks a GPU when there is one (cpu with --quantize).
        workers: inference worker processes per device, each holding a copy of the model.
        threads: torch threads of each CPU worker. Default: the usable cores less one (the HTTP server's),
            divided by --workers, at least 1.
        timeout: seconds a request may wait for its answer before it gets 504.
        fast_queue: answers travel from the workers to the HTTP server over ZeroMQ (LitServe's
            fast_queue) instead of a multiprocessing queue.
        graceful_timeout: on SIGTERM, seconds the requests in flight get to be answered.
        log_level: log level of the server (uvicorn, LitServe, this command).
        access_log: log one line per HTTP request.
    """
    from seq2seq_lightning.checkpoints import load_checkpoint
    from seq2seq_lightning.serving import api as serving
    from seq2seq_lightning.serving.batching import PromptBatchLoop
    from seq2seq_lightning.serving.limits import source_limit
    from seq2seq_lightning.serving.server import build_server, run_server
    from seq2seq_lightning.serving.stats import BatchStats

    logging.basicConfig(level=log_level.upper(), format=serving.LOG_FORMAT)
    for name, value in (("max_batch_size", max_batch_size), ("workers", workers), ("port", port)):
        if value < 1:
            raise ValueError(f"{name} must be positive, got {value}")
    if batch_timeout < 0:
        raise ValueError(f"batch_timeout must be >= 0, got {batch_timeout}")
    if quantize:
        if accelerator == "cuda":
            raise ValueError("--quantize int8 runs on the CPU; drop --accelerator cuda")
        accelerator = "cpu"
    hparams = load_checkpoint(ckpt_path).get("hyper_parameters", {})  # a missing or unsafe file fails here
    cls = serving.module_class(hparams, ckpt_path)
    if quantize and not callable(getattr(cls, "quantize", None)):
        raise ValueError(f"{cls.__name__} has no quantize(); this version cannot serve --quantize {quantize}")
    search = serving.check_strategy(hparams, strategy, strategy_kwargs or {})  # before any worker starts
    field = serving.field_of(cls)
    limit = None
    if field == "source":
        limit, origin = source_limit(ckpt_path, hparams, max_source_len, config)
        log.info("sources are cut to %d tokens (from %s)", limit, origin)
    log.info("decoding with %s", serving.describe(search))
    if threads is None:
        threads = max(1, (len(os.sched_getaffinity(0)) - 1) // workers)  # a core stays with the HTTP server
    stats = BatchStats(max_batch_size)
    lit_api = serving.Seq2SeqAPI(ckpt_path, module_cls=cls, strategy=strategy, strategy_kwargs=strategy_kwargs,
                                 max_source_len=limit, threads=threads, quantize=quantize,
                                 max_batch_size=max_batch_size, batch_timeout=batch_timeout, stats=stats,
                                 loop=PromptBatchLoop(), log_level=log_level)
    settings = {"batch_timeout": batch_timeout, "fast_queue": fast_queue, "workers": workers, "threads": threads,
                "max_source_len": limit, "strategy": strategy, "strategy_kwargs": strategy_kwargs or {},
                "quantize": quantize}
    server = build_server(lit_api, field=field, max_request_bytes=max_request_bytes, accelerator=accelerator,
                          workers=workers, timeout=timeout, fast_queue=fast_queue, stats=stats, settings=settings)
    stopped = run_server(server, host=host, port=port, graceful_timeout=graceful_timeout, log_level=log_level,
                         access_log=access_log)
    log.info("stopped%s", " (SIGTERM)" if stopped else "")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``seq2seq serve`` options (the arguments of :func:`serve`) and serve."""
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(prog="seq2seq serve", description=(serve.__doc__ or "").split("\n\n")[0],
                            default_env=False)
    parser.add_function_arguments(serve, as_positional=False)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    return serve(**args.as_dict())
