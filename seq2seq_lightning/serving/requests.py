"""What a ``POST /predict`` body may hold, checked before a request reaches the inference worker.

:class:`RequestGuard` is an ASGI middleware in front of the prediction route. It answers, with a 4xx
and ``{"error": "..."}``, every body that is larger than the limit (413), is not JSON (400), or is
not one JSON object holding the task's field as a string and nothing but the task's optional keys,
each of its type (422). Only requests that pass are queued, so a malformed one never joins (nor
fails) a batch. What only the model can tell (an image that does not decode, constraints the
server's strategy cannot meet) is checked in the worker, row by row: see :mod:`seq2seq_lightning.serving.api`.

The optional keys are those of a ``seq2seq predict`` JSON line (:data:`OPTIONAL_KEYS`), with the
same types and null read as absent: a translation request may add ``"prefix"`` (target text the
output starts with) and ``"constraints"`` (phrases the output contains), and every request
``"nbest"`` (true: the answer carries the n-best list predict writes).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: bodies up to this many bytes over the limit are read to their end before the 413 goes out, so a
#: client that writes its whole body before reading (most do) gets the answer, not a reset connection
DRAIN_BYTES = 16 * 2**20


class RequestError(Exception):
    """A request the server refuses: ``status`` (4xx) and ``message`` (the JSON ``error``)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _type_name(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


def _is_string_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


#: what each optional key must hold (when not null), by name: (check, description)
KEY_TYPES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "prefix": (lambda v: isinstance(v, str), "a string"),
    "constraints": (_is_string_list, "an array of strings"),
    "nbest": (lambda v: isinstance(v, bool), "true or false"),
}

#: the optional keys of a request, by its required field: the keys a ``seq2seq predict`` JSON line of
#: that task reads, and ``nbest``
OPTIONAL_KEYS: dict[str, tuple[str, ...]] = {"source": ("prefix", "constraints", "nbest"), "image": ("nbest",)}


def parse_body(body: bytes, field: str) -> dict[str, Any]:
    """A request body, which must be one JSON object holding ``field`` as a string and, optionally,
    the keys :data:`OPTIONAL_KEYS` allows for it, each of its type (:data:`KEY_TYPES`) or null.

    Args:
        body: the raw request body.
        field: the key every request holds (``"source"`` for translation, ``"image"`` for captioning).

    Returns:
        The object, its null optional keys left out.

    Raises:
        RequestError: 400 when the body is not JSON; 422 when it is not an object, lacks ``field``, holds
            it as anything but a string, holds an optional key of the wrong type, or holds other keys.
    """
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, f"the request body is not JSON ({exc})") from None
    optional = OPTIONAL_KEYS.get(field, ())
    expected = f'a JSON object {{"{field}": string}}'
    if optional:
        expected += f" with optional {', '.join(map(json.dumps, optional))}"
    if not isinstance(payload, dict):
        raise RequestError(422, f"the request body must be {expected}, not {_type_name(payload)}")
    if field not in payload:
        raise RequestError(422, f'missing "{field}": the request body must be {expected}')
    value = payload[field]
    if not isinstance(value, str):
        raise RequestError(422, f'"{field}" must be a string, not {_type_name(value)}')
    unknown = sorted(k for k in payload if k != field and k not in optional)
    if unknown:
        raise RequestError(422, f"unknown field(s) {', '.join(map(json.dumps, unknown))}: the request body must be "
                                f"{expected}")
    for key in optional:
        given = payload.get(key)
        check, description = KEY_TYPES[key]
        if given is not None and not check(given):
            odd = [v for v in given if not isinstance(v, str)] if isinstance(given, list) else []
            found = f"an array holding {_type_name(odd[0])}" if odd else _type_name(given)
            raise RequestError(422, f'"{key}" must be {description}, not {found}')
    return {k: v for k, v in payload.items() if v is not None or k == field}


async def send_error(send: Send, status: int, message: str) -> None:
    """Answer with ``status`` and the JSON body ``{"error": message}``; the connection closes after it."""
    body = json.dumps({"error": message}).encode("utf-8")
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: refuses malformed ``POST`` bodies on ``path`` with a 4xx JSON error.

    A body that passes is handed on unchanged, its content type set to ``application/json`` (what the
    body is, whatever the client declared: ``curl -d`` says form data).

    Args:
        app: the application behind it.
        path: the guarded route (``/predict``).
        field: the key every request holds (:func:`parse_body`).
        max_bytes: the largest body accepted; a longer one gets 413.
    """

    def __init__(self, app: ASGIApp, *, path: str, field: str, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"max_request_bytes must be positive, got {max_bytes}")
        self.app, self.path, self.field, self.max_bytes = app, path, field, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or scope.get("path") != self.path:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_large = f"the request body is larger than {self.max_bytes} bytes (--max_request_bytes)"
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes + DRAIN_BYTES:
            await send_error(send, 413, too_large)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size <= self.max_bytes:
                chunks.append(chunk)
            elif size > self.max_bytes + DRAIN_BYTES:
                break
            if not message.get("more_body", False):
                break
        if size > self.max_bytes:
            await send_error(send, 413, too_large)
            return
        body = b"".join(chunks)
        try:
            parse_body(body, self.field)
        except RequestError as exc:
            await send_error(send, exc.status, exc.message)
            return
        headers = [(k, v) for k, v in scope.get("headers") or [] if k != b"content-type"]
        scope = dict(scope, headers=[*headers, (b"content-type", b"application/json")])
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect, when it comes

        await self.app(scope, replay, send)
