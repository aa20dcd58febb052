"""``@trace`` and ``start_span()``: record function calls as OpenTelemetry spans.

Spans are ordinary OTel SDK spans from the configured ``TracerProvider``; inputs, outputs and the
span type ride on them as attributes (see :mod:`traceduck.attributes`). Nothing here touches
storage. A failure inside tracing is logged and swallowed: the traced call always runs exactly
once and its result or exception reaches the caller unchanged.
"""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar, overload

from opentelemetry import context as otel_context
from opentelemetry import trace as otel_trace
from opentelemetry.trace import Span, Status, StatusCode

from . import attributes as attr
from .config import get_tracer
from .end_values import unpark
from .roots import TraceCarrier, claim_preview, claim_root, end_values, release_preview, release_root
from .serialize import DEFAULT_MAX_CHARS, TRUNCATED_KEY, to_json

logger = logging.getLogger("traceduck")

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_SPAN_TYPE = "UNKNOWN"
#: Most items of a traced generator kept as its output.
MAX_YIELDED_ITEMS = 1000

#: original function -> its traced wrapper (lets framework integrations find traced handlers).
traced_functions: weakref.WeakKeyDictionary[Callable[..., Any], Callable[..., Any]] = (
    weakref.WeakKeyDictionary()
)


def _attribute_value(value: Any) -> Any:
    """An OTel-legal attribute value: primitives and lists of primitives as they are, else JSON."""
    if isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, (str, bool, int, float)) for v in value):
        if len({type(v) for v in value}) <= 1:
            return list(value)
    return to_json(value)


def _clean_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    if not attributes:
        return {}
    return {str(k): _attribute_value(v) for k, v in attributes.items() if v is not None}


def _record_error(span: Span, exc: BaseException) -> None:
    try:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    except Exception:
        logger.exception("traceduck could not record an exception on a span")


class LiveSpan:
    """A span being recorded, as yielded by :func:`start_span`."""

    __slots__ = ("_span", "_keep")

    def __init__(self, span: Span, keep: dict[str, Any] | None = None) -> None:
        self._span = span
        #: traceduck's own attributes, set again at the end if SpanLimits evicted them.
        self._keep = keep if keep is not None else {}

    @property
    def span(self) -> Span:
        """The underlying OpenTelemetry span."""
        return self._span

    @property
    def trace_id(self) -> str:
        return format(self._span.get_span_context().trace_id, "032x")

    @property
    def span_id(self) -> str:
        return format(self._span.get_span_context().span_id, "016x")

    def set_inputs(self, inputs: Any) -> None:
        text = self._keep[attr.INPUTS] = to_json(inputs)
        self._span.set_attribute(attr.INPUTS, text)

    def set_outputs(self, outputs: Any) -> None:
        text = self._keep[attr.OUTPUTS] = to_json(outputs)
        self._span.set_attribute(attr.OUTPUTS, text)

    def set_attribute(self, key: str, value: Any) -> None:
        self._span.set_attribute(str(key), _attribute_value(value))

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        self._span.set_attributes(_clean_attributes(attributes))

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        self._span.add_event(name, _clean_attributes(attributes))

    def set_status(self, status: str, description: str | None = None) -> None:
        """Set ``"OK"`` or ``"ERROR"`` (with an optional description)."""
        code = StatusCode.ERROR if status.upper() == "ERROR" else StatusCode.OK
        self._span.set_status(Status(code, description if code is StatusCode.ERROR else None))


@contextmanager
def start_span(
    name: str,
    span_type: str = DEFAULT_SPAN_TYPE,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[LiveSpan]:
    """Record a block of code as a span, child of the current span if there is one.

    An exception raised inside the block marks the span ERROR, is recorded as an event and
    propagates unchanged.
    """
    start_attributes = _clean_attributes(attributes)
    if span_type and span_type != DEFAULT_SPAN_TYPE:  # absent reads back as UNKNOWN
        start_attributes[attr.SPAN_TYPE] = span_type
    span = get_tracer().start_span(name, attributes=start_attributes)
    role = claim_root(span)
    token = otel_context.attach(otel_trace.set_span_in_context(span))
    live = LiveSpan(span, start_attributes)
    try:
        yield live
    except BaseException as exc:
        _record_error(span, exc)
        raise
    finally:
        otel_context.detach(token)
        _end(span, role, keep=live._keep)


class _CallRecorder:
    """What a decorated function needs per call, computed once at decoration time."""

    __slots__ = ("name", "start_attributes", "signature", "positional", "skip_first", "simple")

    def __init__(self, func: Callable[..., Any], name: str | None, span_type: str | None,
                 attributes: Mapping[str, Any] | None) -> None:
        self.name = name or getattr(func, "__qualname__", None) or getattr(func, "__name__", "call")
        self.start_attributes = _clean_attributes(attributes)
        if span_type and span_type != DEFAULT_SPAN_TYPE:  # absent reads back as UNKNOWN
            self.start_attributes[attr.SPAN_TYPE] = span_type
        try:
            self.signature: inspect.Signature | None = inspect.signature(func)
        except (TypeError, ValueError):
            self.signature = None
        params = list(self.signature.parameters.values()) if self.signature else []
        plain = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.POSITIONAL_ONLY)
        self.simple = bool(self.signature) and all(p.kind in plain for p in params)
        self.positional = [p.name for p in params]
        self.skip_first = bool(params) and params[0].name in ("self", "cls")

    def inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.simple and len(args) <= len(self.positional):
            bound = dict(zip(self.positional, args))
            if kwargs:
                bound.update(kwargs)
        elif self.signature is not None:
            try:
                bound = dict(self.signature.bind_partial(*args, **kwargs).arguments)
            except TypeError:
                return {"args": list(args), "kwargs": kwargs}
        else:
            return {"args": list(args), "kwargs": kwargs}
        if self.skip_first and self.positional and args:
            bound.pop(self.positional[0], None)
        return bound

    def start(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Span, otel_context.Context, Any,
                                                                            dict[str, Any]]:  # fmt: skip
        """Start the span; the third value is the carrier the span is tied to (see ``_end``), the
        fourth holds the attributes it started with (set again at the end if they were evicted)."""
        attributes = dict(self.start_attributes)
        inputs = None
        try:
            inputs = attributes[attr.INPUTS] = to_json(self.inputs(args, kwargs))
        except Exception:
            logger.exception("traceduck could not record the inputs of %s", self.name)
        span = get_tracer().start_span(self.name, attributes=attributes)
        role = claim_root(span) or claim_preview(span, inputs)
        return span, otel_trace.set_span_in_context(span), role, attributes


def _end(span: Span, role: TraceCarrier | None, outputs: str | None = None, keep: dict[str, Any] | None = None,
         set_outputs: bool = False) -> None:
    """End ``span``. ``role`` is the carrier the span is tied to: the one of its trace when the
    span is that trace's local root (see :func:`claim_root`), whose fields are given now; the
    one of a root of other instrumentation when the span lends it previews; or None. With
    ``set_outputs``, ``outputs`` is given to the span first (see :func:`end_values`)."""
    parked = None
    try:
        outputs_value = outputs if set_outputs else None
        if role is not None and role.span is span:
            parked = release_root(role, outputs_value)
        else:
            if outputs_value is not None:
                parked = end_values(span, outputs_value, None)
            if role is not None:
                release_preview(role, outputs)
        # Past SpanLimits (128 attributes by default) the SDK evicts the OLDEST attributes: the
        # span's type and inputs come back (the dropped count is stored with the span).
        if keep and getattr(span, "dropped_attributes", 0):  # a sampled-out span has none
            span.set_attributes(keep)
    except Exception:
        logger.exception("traceduck could not record the outputs or the trace fields")
    span.end()
    if parked is not None:
        unpark(parked)


def _outputs_text(value: Any) -> str | None:
    try:
        return to_json(value)
    except Exception:
        logger.exception("traceduck could not record outputs")
        return None


def _set_outputs(span: Span, value: Any) -> str | None:
    text = _outputs_text(value)
    if text is not None:
        try:
            span.set_attribute(attr.OUTPUTS, text)
        except Exception:
            logger.exception("traceduck could not record outputs")
    return text


class _Yielded:
    """The items a traced generator yielded, capped at ``MAX_YIELDED_ITEMS``."""

    __slots__ = ("items", "count")

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.count = 0

    def add(self, item: Any) -> None:
        self.count += 1
        if self.count <= MAX_YIELDED_ITEMS:
            self.items.append(item)

    def output(self) -> Any:
        if self.count <= MAX_YIELDED_ITEMS:
            return self.items
        return {TRUNCATED_KEY: True, "items_total": self.count, "items": self.items}


def _wrap_sync(func: Callable[..., Any], rec: _CallRecorder) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            span, ctx, role, keep = rec.start(args, kwargs)
            token = otel_context.attach(ctx)
        except Exception:
            logger.exception("traceduck could not start a span for %s", rec.name)
            return func(*args, **kwargs)
        outputs = None
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            _record_error(span, exc)
            raise
        else:
            outputs = _outputs_text(result)
            return result
        finally:
            otel_context.detach(token)
            _end(span, role, outputs, keep, set_outputs=True)

    return wrapper


def _wrap_async(func: Callable[..., Any], rec: _CallRecorder) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            span, ctx, role, keep = rec.start(args, kwargs)
            token = otel_context.attach(ctx)
        except Exception:
            logger.exception("traceduck could not start a span for %s", rec.name)
            return await func(*args, **kwargs)
        outputs = None
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            _record_error(span, exc)
            raise
        else:
            outputs = _outputs_text(result)
            return result
        finally:
            otel_context.detach(token)
            _end(span, role, outputs, keep, set_outputs=True)

    return wrapper


def _wrap_generator(func: Callable[..., Any], rec: _CallRecorder) -> Callable[..., Any]:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            span, ctx, role, keep = rec.start(args, kwargs)
        except Exception:
            logger.exception("traceduck could not start a span for %s", rec.name)
            return (yield from func(*args, **kwargs))
        yielded = _Yielded()
        outputs = None
        inner = func(*args, **kwargs)
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                # The span is current only while the generator body runs, never in the consumer.
                token = otel_context.attach(ctx)
                try:
                    if to_throw is not None:
                        exc, to_throw = to_throw, None
                        item = inner.throw(exc)
                    else:
                        item = inner.send(to_send)
                except StopIteration as stop:
                    outputs = _set_outputs(span, yielded.output())
                    return stop.value
                finally:
                    otel_context.detach(token)
                yielded.add(item)
                try:
                    to_send = yield item
                except GeneratorExit:
                    token = otel_context.attach(ctx)
                    try:
                        inner.close()
                    finally:
                        otel_context.detach(token)
                    outputs = _set_outputs(span, yielded.output())
                    raise
                except BaseException as exc:
                    to_throw = exc
        except GeneratorExit:
            raise
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            _end(span, role, outputs, keep)

    return wrapper


def _wrap_async_generator(func: Callable[..., Any], rec: _CallRecorder) -> Callable[..., Any]:
    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            span, ctx, role, keep = rec.start(args, kwargs)
        except Exception:
            logger.exception("traceduck could not start a span for %s", rec.name)
            async for item in func(*args, **kwargs):
                yield item
            return
        yielded = _Yielded()
        outputs = None
        inner = func(*args, **kwargs)
        to_send: Any = None
        to_throw: BaseException | None = None
        try:
            while True:
                token = otel_context.attach(ctx)
                try:
                    if to_throw is not None:
                        exc, to_throw = to_throw, None
                        item = await inner.athrow(exc)
                    else:
                        item = await inner.asend(to_send)
                except StopAsyncIteration:
                    outputs = _set_outputs(span, yielded.output())
                    return
                finally:
                    otel_context.detach(token)
                yielded.add(item)
                try:
                    to_send = yield item
                except GeneratorExit:
                    token = otel_context.attach(ctx)
                    try:
                        await inner.aclose()
                    finally:
                        otel_context.detach(token)
                    outputs = _set_outputs(span, yielded.output())
                    raise
                except BaseException as exc:
                    to_throw = exc
        except GeneratorExit:
            raise
        except BaseException as exc:
            _record_error(span, exc)
            raise
        finally:
            _end(span, role, outputs, keep)

    return wrapper


@overload
def trace(func: F) -> F: ...
@overload
def trace(
    func: None = None,
    *,
    name: str | None = None,
    span_type: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Callable[[F], F]: ...


def trace(
    func: Any = None,
    *,
    name: str | None = None,
    span_type: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Any:
    """Record every call of a function as a span.

    Use bare (``@trace``), with arguments (``@trace(name=..., span_type="LLM", attributes={...})``)
    or as ``trace(fn)``. Works on functions, ``async def``, generators, async generators, methods,
    classmethods and staticmethods. The bound arguments become the span's inputs and the return
    value (or the yielded items) its outputs; an exception marks the span ERROR and propagates.
    """
    if func is None:
        return functools.partial(trace, name=name, span_type=span_type, attributes=attributes)
    if isinstance(func, staticmethod):
        return staticmethod(trace(func.__func__, name=name, span_type=span_type, attributes=attributes))
    if isinstance(func, classmethod):
        return classmethod(trace(func.__func__, name=name, span_type=span_type, attributes=attributes))
    if not callable(func):
        raise TypeError(f"@trace needs a function, got {type(func).__name__}")
    rec = _CallRecorder(func, name, span_type, attributes)
    if inspect.isasyncgenfunction(func):
        wrapper = _wrap_async_generator(func, rec)
    elif inspect.isgeneratorfunction(func):
        wrapper = _wrap_generator(func, rec)
    elif inspect.iscoroutinefunction(func):
        wrapper = _wrap_async(func, rec)
    else:
        wrapper = _wrap_sync(func, rec)
    try:
        traced_functions[func] = wrapper
    except TypeError:  # not weak-referenceable
        pass
    return wrapper
