"""OTLP/HTTP trace requests (protobuf or JSON, optionally gzip) into ``RawSpans``.

Uses the official ``opentelemetry-proto`` messages. OTLP/JSON differs from the protobuf JSON
mapping in one way that matters: trace and span ids are hex strings, not base64, so they are
converted before the message is parsed. A span that cannot be stored (bad ids, no start time) is
rejected on its own and counted in the response's partial success; the rest are stored.
"""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from traceduck import attributes as attr
from traceduck.raw_spans import RawSpans, span_row
from traceduck.serialize import TRUNCATED_KEY, dumps

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_IS_REMOTE_KNOWN = 0x100
_IS_REMOTE = 0x200
_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)
#: Times are stored as signed 64-bit nanoseconds; OTLP's fixed64 allows up to 2**64-1.
_MAX_TIME_NS = 2**63 - 1
#: Nested attribute values (arrays, key-value lists) deeper than this become a truncation marker.
_MAX_VALUE_DEPTH = 32


class BadRequest(ValueError):
    """The body cannot be read as an OTLP trace request; the message says why."""


class TooLarge(ValueError):
    """The body is larger than allowed once decompressed."""


def decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip or deflate), never producing more than ``limit`` bytes."""
    encoding = (encoding or "identity").strip().lower()
    if encoding in ("", "identity"):
        if len(body) > limit:
            raise TooLarge(f"request body is larger than {limit} bytes")
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"unsupported Content-Encoding {encoding!r}; use gzip, deflate or none")
    decoder = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = decoder.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"body is not valid {encoding}: {exc}") from None
    if len(out) > limit or decoder.unconsumed_tail:
        raise TooLarge(f"request body is larger than {limit} bytes once decompressed")
    return out


def _hex_ids_to_base64(node: Any) -> None:
    """OTLP/JSON writes ids as hex; protobuf's JSON mapping expects base64 for bytes fields."""
    if isinstance(node, dict):
        for key in ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"):
            value = node.get(key)
            if isinstance(value, str) and value:
                try:
                    node[key] = base64.b64encode(bytes.fromhex(value)).decode()
                except ValueError:
                    raise BadRequest(f"{key} {value[:40]!r} is not hexadecimal") from None
        for value in node.values():
            _hex_ids_to_base64(value)
    elif isinstance(node, list):
        for item in node:
            _hex_ids_to_base64(item)


def parse_request(body: bytes, content_type: str) -> ExportTraceServiceRequest:
    media = (content_type or "").split(";")[0].strip().lower()
    message = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            message.ParseFromString(body)
        except (DecodeError, RuntimeError, ValueError) as exc:
            raise BadRequest(f"body is not a valid OTLP protobuf ExportTraceServiceRequest: {exc}") from None
        return message
    if media == JSON:
        try:
            data = json.loads(body)
            if not isinstance(data, dict):
                raise BadRequest("body must be a JSON object (an OTLP ExportTraceServiceRequest)")
            _hex_ids_to_base64(data)
        except RecursionError:
            raise BadRequest("body is not a valid OTLP/JSON ExportTraceServiceRequest: it nests too deeply "
                             "(OTLP messages nest at most 100 levels)") from None
        except (ValueError, UnicodeDecodeError) as exc:
            if isinstance(exc, BadRequest):
                raise
            raise BadRequest(f"body is not valid JSON: {exc}") from None
        try:
            json_format.ParseDict(data, message, ignore_unknown_fields=True)
        # SystemError: upb's ParseDict fails that way on some malformed values instead of a ParseError
        except (json_format.ParseError, ValueError, TypeError, RecursionError, SystemError) as exc:
            raise BadRequest(f"body is not a valid OTLP/JSON ExportTraceServiceRequest: {exc}") from None
        return message
    raise BadRequest(f"unsupported Content-Type {content_type!r}; use {PROTOBUF} or {JSON}")


_SCALARS = frozenset(("string_value", "bool_value", "int_value", "double_value"))


def _value(value: Any, depth: int = 0) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind in _SCALARS:
        return getattr(value, kind)
    if depth > _MAX_VALUE_DEPTH:
        return {TRUNCATED_KEY: True, "max_depth": _MAX_VALUE_DEPTH}
    if kind == "array_value":
        return [_value(v, depth + 1) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _value(kv.value, depth + 1) for kv in value.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return None


def _attributes(items: Any) -> dict[str, Any]:
    out = {}
    for kv in items:
        value = kv.value
        kind = value.WhichOneof("value")  # inlined scalar case: most attributes are scalars
        out[kv.key] = getattr(value, kind) if kind in _SCALARS else _value(value)
    return out


def to_raw_spans(message: ExportTraceServiceRequest, raw: RawSpans, project: str | None) -> tuple[int, list[str]]:
    """Append the message's spans to ``raw``; returns (rejected count, reasons)."""
    rejected = 0
    reasons: list[str] = []
    rows: list[tuple[Any, ...]] = []
    append, row, default_project = rows.append, span_row, raw.default_project  # the loop runs per span
    kinds, statuses = _KINDS, _STATUS
    for resource_spans in message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        resource_index = raw.resource(resource)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                trace_id, span_id, parent = span.trace_id, span.span_id, span.parent_span_id
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                if not (len(trace_id) == 16 and len(span_id) == 8 and trace_id != _ZERO_TRACE
                        and span_id != _ZERO_SPAN and (not parent or len(parent) == 8)
                        and 0 < start <= _MAX_TIME_NS and end <= _MAX_TIME_NS and (not end or end >= start)):
                    rejected += 1  # the common case is the one expression above; here, say why
                    if len(reasons) < 5:
                        reasons.append(_problem(span, trace_id, span_id, parent, start))
                    continue
                flags = span.flags
                events = None
                if span.events:
                    events = dumps([
                        {"name": e.name, "timestamp_ns": e.time_unix_nano, "attributes": _attributes(e.attributes)}
                        for e in span.events
                    ])  # fmt: skip
                attributes = _attributes(span.attributes)
                if span.dropped_attributes_count:  # the sender's SDK dropped some (SpanLimits)
                    attributes[attr.DROPPED_ATTRIBUTES] = span.dropped_attributes_count
                if span.dropped_events_count:
                    attributes[attr.DROPPED_EVENTS] = span.dropped_events_count
                status = span.status
                append(row(
                    trace_id.hex(),
                    span_id.hex(),
                    parent.hex() if parent else None,
                    bool(flags & _IS_REMOTE_KNOWN and flags & _IS_REMOTE),
                    span.name,
                    kinds.get(span.kind, "INTERNAL"),
                    start,
                    end or None,
                    statuses.get(status.code, "UNSET"),
                    status.message or None,
                    attributes,
                    events,
                    resource_index,
                    project,
                    default_project,
                ))  # fmt: skip
    raw.add_rows(rows)
    return rejected, reasons


def _problem(span: Any, trace_id: bytes, span_id: bytes, parent: bytes, start: int) -> str:
    """Why a span the check in ``to_raw_spans`` refused cannot be stored."""
    if len(trace_id) != 16 or trace_id == _ZERO_TRACE:
        return f"span {span.name[:40]!r}: trace_id must be 16 non-zero bytes"
    if len(span_id) != 8 or span_id == _ZERO_SPAN:
        return f"span {span.name[:40]!r}: span_id must be 8 non-zero bytes"
    if parent and len(parent) != 8:
        return f"span {span.name[:40]!r}: parent_span_id must be 8 bytes"
    if not start:
        return f"span {span.name[:40]!r}: start_time_unix_nano is missing"
    if start > _MAX_TIME_NS or span.end_time_unix_nano > _MAX_TIME_NS:
        return f"span {span.name[:40]!r}: a time is beyond the year 2262 (more than 2**63-1 ns)"
    return f"span {span.name[:40]!r}: ends before it starts"


_KINDS = {0: "INTERNAL", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


def response(rejected: int, reasons: list[str], content_type: str) -> tuple[bytes, str]:
    """An ExportTraceServiceResponse in the request's encoding (partial success if rejected)."""
    message = ExportTraceServiceResponse()
    if rejected:
        message.partial_success.rejected_spans = rejected
        message.partial_success.error_message = "; ".join(reasons)
    if (content_type or "").split(";")[0].strip().lower() == JSON:
        return json_format.MessageToJson(message, indent=None).encode(), JSON
    return message.SerializeToString(), PROTOBUF


def gzip_bytes(data: bytes) -> bytes:
    return gzip.compress(data)
