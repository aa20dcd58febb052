"""Trace the official ``openai`` client: every ``chat.completions.create`` becomes an LLM span.

``traceduck.openai.instrument()`` patches ``Completions.create`` and ``AsyncCompletions.create``
for every client; ``instrument(client)`` patches one client only. Each call becomes a span of type
``LLM`` named ``chat <model>`` inside the current trace (or a new trace), whose inputs are the
request with every optional parameter's default filled in and whose outputs are the normalised
response (:mod:`traceduck.llm`), with OpenTelemetry GenAI attributes (model, response id, finish
reasons, token usage), cost, latency and, for streams, time to first token and chunk count.

A streamed call returns a stream that yields openai's own chunk objects, unchanged, as they
arrive; the span ends when the stream is exhausted, closed, or fails. Nothing traceduck does can
break the call: its own failures are logged; openai's errors reach the caller unchanged (the span
records them and is marked ERROR).

Extra keyword arguments of ``create``, removed before openai sees them:

- ``traceduck_request_attributes`` / ``traceduck_response_attributes``: dicts stored as trace
  metadata and as LLM-span attributes (``metadata.user_id = '123'`` finds them);
- ``traceduck_tags``: trace tags; ``traceduck_session_id``: the trace's session.

Not traced: ``with_raw_response``/``with_streaming_response`` calls and the ``parse``/``stream``
helpers (they bypass ``create`` or return raw HTTP responses).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span

from . import attributes as attr
from .config import get_tracer
from .current_trace import update_current_trace
from .llm.defaults import with_defaults
from .llm.normalize import normalize_chat
from .llm.record import CallContext
from .roots import TraceCarrier, claim_root
from .serialize import to_json
from .tracing import _end, _record_error

try:
    import openai
    from openai.resources.chat.completions import AsyncCompletions, Completions
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError("traceduck.openai needs the openai package: pip install 'traceduck[openai]'") from exc

logger = logging.getLogger("traceduck")

EXTRA_KWARGS = {
    "traceduck_request_attributes": "request_attributes",
    "traceduck_response_attributes": "response_attributes",
    "traceduck_tags": "tags",
    "traceduck_session_id": "session_id",
}
#: ``create`` arguments that shape the HTTP request but are not request parameters.
_NOT_PARAMETERS = ("extra_headers", "extra_query", "extra_body", "timeout")
_RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
_ORIGINAL = "__traceduck_original__"

_lock = threading.Lock()
_instrumented_resources: weakref.WeakSet[Any] = weakref.WeakSet()


def _request_of(kwargs: dict[str, Any]) -> dict[str, Any]:
    """The request body openai will send: set parameters, plus ``extra_body``."""
    request = {k: v for k, v in kwargs.items()
               if k not in _NOT_PARAMETERS and not isinstance(v, (openai.NotGiven, openai.Omit))}  # fmt: skip
    extra = kwargs.get("extra_body")
    if isinstance(extra, dict):
        request.update(extra)
    return request


class _Call:
    """One traced ``create`` call: its span, request, extras and (for streams) chunks."""

    def __init__(self, span: Span, request: dict[str, Any], context: CallContext,
                 root: TraceCarrier | None) -> None:
        self.span = span
        self.request = request
        self.context = context
        self.root = root
        self.started = time.perf_counter()
        self.first_chunk: float | None = None
        self._done = False
        self._lock = threading.Lock()

    @classmethod
    def start(cls, kwargs: dict[str, Any], extras: dict[str, Any]) -> _Call | None:
        """Start the span (None if traceduck itself fails; the call then runs untraced)."""
        try:
            messages = kwargs.get("messages")
            if messages is not None and not isinstance(messages, (list, tuple, openai.NotGiven, openai.Omit)):
                kwargs["messages"] = list(messages)  # an iterator can only be read once: by both of us
            request = _request_of(kwargs)
            context = CallContext.of(**extras)
            span = get_tracer().start_span(
                f"chat {request.get('model')}",
                attributes={attr.SPAN_TYPE: "LLM", attr.INPUTS: to_json(with_defaults(request)[0])},
            )
            call = cls(span, request, context, claim_root(span))
        except Exception:
            logger.exception("traceduck could not start the span of an OpenAI call")
            return None
        try:
            metadata = context.metadata()
            if context.tags or metadata:
                with call.active():
                    update_current_trace(tags=context.tags or None, metadata=metadata or None)
        except Exception:
            logger.exception("traceduck could not record the trace fields of an OpenAI call")
        return call

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make the span current (synchronous code only: the context must be detached in it)."""
        token = otel_context.attach(otel_trace.set_span_in_context(self.span))
        try:
            yield
        finally:
            otel_context.detach(token)

    def chunk_arrived(self) -> None:
        if self.first_chunk is None:
            self.first_chunk = time.perf_counter()

    def finish(self, response: Any = None, chunks: list[Any] | None = None, complete: bool | None = None,
               error: BaseException | None = None) -> None:  # fmt: skip
        """Record the outcome and end the span, once; never raises."""
        with self._lock:
            if self._done:
                return
            self._done = True
        try:
            self._record(response, chunks, complete)
        except Exception:
            logger.exception("traceduck could not record the response of an OpenAI call")
        try:
            if error is not None:
                _record_error(self.span, error)
            _end(self.span, self.root)
        except Exception:
            logger.exception("traceduck could not end the span of an OpenAI call")

    def _record(self, response: Any, chunks: list[Any] | None, complete: bool | None) -> None:
        latency_ms = (time.perf_counter() - self.started) * 1000
        ttft_ms = (self.first_chunk - self.started) * 1000 if self.first_chunk is not None else None
        if chunks is not None:
            if not chunks:  # closed or failed before the first chunk: nothing to normalise
                self.span.set_attributes({"traceduck.llm.stream": True, "traceduck.llm.stream_complete": False,
                                          "traceduck.llm.chunk_count": 0})  # fmt: skip
                return
            given: Any = [_as_dict(c) for c in chunks]
        else:
            given = _as_dict(response)
        log = normalize_chat(self.request, given, latency_ms=latency_ms, ttft_ms=ttft_ms, stream_complete=complete)
        self.span.set_attribute(attr.OUTPUTS, to_json(log.response))
        self.span.set_attributes(self.context.span_attributes(log))
        if self.root is not None and log.response_preview is not None:
            with self.active():
                update_current_trace(response_preview=log.response_preview)


def _as_dict(obj: Any) -> Any:
    """openai's pydantic object as the JSON it came from (fields the server did not send omitted)."""
    dump = getattr(obj, "model_dump", None)
    return dump(mode="json", exclude_unset=True, warnings=False) if callable(dump) else obj


def _pop_extras(kwargs: dict[str, Any]) -> dict[str, Any]:
    return {name: kwargs.pop(key) for key, name in EXTRA_KWARGS.items() if key in kwargs}


def _untraced(kwargs: dict[str, Any]) -> bool:
    headers = kwargs.get("extra_headers")
    return isinstance(headers, dict) and _RAW_RESPONSE_HEADER in headers


class TracedStream(openai.Stream):  # type: ignore[type-arg]
    """openai's ``Stream``, passed through chunk by chunk; ends the LLM span when done.

    It is an ``openai.Stream`` (``isinstance`` holds) sharing the original's state; iteration,
    ``close()`` and ``with`` go through the original.
    """

    def __init__(self, stream: openai.Stream, call: _Call) -> None:  # type: ignore[type-arg]
        self.__dict__.update(stream.__dict__)
        self._td_stream = stream
        self._td_call = call
        self._td_chunks: list[Any] = []

    def __next__(self) -> Any:
        try:
            chunk = self._td_stream.__next__()
        except StopIteration:
            self._td_call.finish(chunks=self._td_chunks)
            raise
        except BaseException as exc:
            self._td_call.finish(chunks=self._td_chunks, complete=False, error=exc)
            raise
        self._td_call.chunk_arrived()
        self._td_chunks.append(chunk)
        return chunk

    def __iter__(self) -> Iterator[Any]:
        return self

    def close(self) -> None:
        try:
            self._td_stream.close()
        finally:
            self._td_call.finish(chunks=self._td_chunks, complete=False)

    def __del__(self) -> None:  # an abandoned stream still ends its span
        call = self.__dict__.get("_td_call")
        if call is not None:
            call.finish(chunks=self.__dict__.get("_td_chunks", []), complete=False)


class TracedAsyncStream(openai.AsyncStream):  # type: ignore[type-arg]
    """openai's ``AsyncStream``, passed through chunk by chunk; ends the LLM span when done."""

    def __init__(self, stream: openai.AsyncStream, call: _Call) -> None:  # type: ignore[type-arg]
        self.__dict__.update(stream.__dict__)
        self._td_stream = stream
        self._td_call = call
        self._td_chunks: list[Any] = []

    async def __anext__(self) -> Any:
        try:
            chunk = await self._td_stream.__anext__()
        except StopAsyncIteration:
            self._td_call.finish(chunks=self._td_chunks)
            raise
        except BaseException as exc:
            self._td_call.finish(chunks=self._td_chunks, complete=False, error=exc)
            raise
        self._td_call.chunk_arrived()
        self._td_chunks.append(chunk)
        return chunk

    def __aiter__(self) -> Any:
        return self

    async def close(self) -> None:
        try:
            await self._td_stream.close()
        finally:
            self._td_call.finish(chunks=self._td_chunks, complete=False)

    def __del__(self) -> None:
        call = self.__dict__.get("_td_call")
        if call is not None:
            call.finish(chunks=self.__dict__.get("_td_chunks", []), complete=False)


def _returned(call: _Call, result: Any) -> Any:
    """What the caller gets: the same response object, or the stream wrapped for tracing."""
    try:
        if isinstance(result, openai.Stream):
            return TracedStream(result, call)
        if isinstance(result, openai.AsyncStream):
            return TracedAsyncStream(result, call)
    except Exception:
        logger.exception("traceduck could not wrap an OpenAI stream")
        call.finish(complete=False)
        return result
    call.finish(response=result)
    return result


def _wrap_sync(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def create(*args: Any, **kwargs: Any) -> Any:
        extras = _pop_extras(kwargs)
        call = None if _untraced(kwargs) else _Call.start(kwargs, extras)
        if call is None:
            return original(*args, **kwargs)
        try:
            with call.active():
                result = original(*args, **kwargs)
        except BaseException as exc:
            call.finish(error=exc)
            raise
        return _returned(call, result)

    setattr(create, _ORIGINAL, original)
    return create


def _wrap_async(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    async def create(*args: Any, **kwargs: Any) -> Any:
        extras = _pop_extras(kwargs)
        call = None if _untraced(kwargs) else _Call.start(kwargs, extras)
        if call is None:
            return await original(*args, **kwargs)
        try:
            with call.active():
                result = await original(*args, **kwargs)
        except BaseException as exc:
            call.finish(error=exc)
            raise
        return _returned(call, result)

    setattr(create, _ORIGINAL, original)
    return create


def _unwrapped(func: Callable[..., Any]) -> Callable[..., Any]:
    return getattr(func, _ORIGINAL, func)


def instrument(client: Any = None) -> None:
    """Trace ``chat.completions.create`` of every openai client, or of ``client`` only.

    Idempotent: instrumenting twice does not record a call twice.
    """
    with _lock:
        if client is None:
            for cls, wrap in ((Completions, _wrap_sync), (AsyncCompletions, _wrap_async)):
                current = cls.__dict__["create"]
                if not hasattr(current, _ORIGINAL):
                    cls.create = wrap(current)  # type: ignore[method-assign]
            return
        resource = client.chat.completions
        if hasattr(vars(resource).get("create"), _ORIGINAL):
            return
        wrap = _wrap_async if isinstance(resource, AsyncCompletions) else _wrap_sync
        original = _unwrapped(type(resource).__dict__["create"]).__get__(resource, type(resource))
        resource.create = wrap(original)
        _instrumented_resources.add(resource)


def uninstrument(client: Any = None) -> None:
    """Undo :func:`instrument`: for ``client`` only, or everywhere (classes and every client)."""
    with _lock:
        resources = [client.chat.completions] if client is not None else list(_instrumented_resources)
        for resource in resources:
            if hasattr(vars(resource).get("create"), _ORIGINAL):
                del resource.create
            _instrumented_resources.discard(resource)
        if client is None:
            for cls in (Completions, AsyncCompletions):
                cls.create = _unwrapped(cls.__dict__["create"])  # type: ignore[method-assign]


def is_instrumented(client: Any = None) -> bool:
    """Whether calls of ``client`` (or of every client, when None) are traced."""
    if client is not None and hasattr(vars(client.chat.completions).get("create"), _ORIGINAL):
        return True
    cls = type(client.chat.completions) if client is not None else Completions
    return hasattr(cls.__dict__["create"], _ORIGINAL)
