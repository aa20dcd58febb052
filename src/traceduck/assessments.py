"""Feedback and expectations: human, LLM-judge or code assessments of a trace.

An assessment names its trace in exactly one way: by ``trace_id``, by the ``client_request_id``
the application set, or by an LLM ``response_id`` (``chatcmpl-...``) recorded on the trace. It may
be logged before the trace is stored; it is then kept, durably, as *pending* and joined when the
trace lands (see :func:`list_pending_assessments`).
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Mapping
from typing import Any

from .entities import Assessment, AssessmentError, AssessmentSource
from .errors import AssessmentNotFoundError
from .metadata import MAX_VALUE_CHARS, check_text
from .stores import resolve_store

MAX_NAME_CHARS = 250
MAX_VALUE_JSON_CHARS = 64 * 1024


def _target(trace_id: str | None, client_request_id: str | None, response_id: str | None) -> tuple[str, str]:
    given = [(k, v) for k, v in (("trace_id", trace_id), ("client_request_id", client_request_id),
                                 ("response_id", response_id)) if v is not None]  # fmt: skip
    if len(given) != 1:
        named = ", ".join(k for k, _ in given) or "none"
        raise ValueError(
            "name the trace with exactly one of trace_id, client_request_id or response_id "
            f"(got {named})"
        )
    kind, value = given[0]
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{kind} must be a non-empty str, not {value!r}")
    if len(value) > MAX_VALUE_CHARS:
        raise ValueError(f"{kind} is {len(value)} characters long; the limit is {MAX_VALUE_CHARS}")
    if kind == "trace_id":
        value = value.strip().lower().replace("-", "")
        if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
            raise ValueError(f"trace_id must be 32 hexadecimal digits, not {trace_id!r}")
    return kind, value


def check_value(value: Any, path: str = "value") -> None:
    """Raise unless ``value`` is JSON made of bool, int, float, str, list and dict."""
    if value is None or isinstance(value, (bool, str, int)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{path} must be a finite number, not {value!r}")
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_value(item, f"{path}[{i}]")
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(f"{path} keys must be str, not {type(key).__name__}")
            check_value(item, f"{path}[{key!r}]")
        return
    raise TypeError(f"{path} must be bool, int, float, str, list or dict, not {type(value).__name__}")


def value_forms(value: Any) -> tuple[str | None, str | None, float | None]:
    """``(json, string form, numeric form)`` of an assessment value, as stored for search."""
    if value is None:
        return None, None, None
    text = json.dumps(value, ensure_ascii=False)
    if len(text) > MAX_VALUE_JSON_CHARS:
        raise ValueError(f"value is {len(text)} characters as JSON; the limit is {MAX_VALUE_JSON_CHARS}")
    if isinstance(value, bool):
        return text, "true" if value else "false", 1.0 if value else 0.0
    if isinstance(value, (int, float)):
        return text, text, float(value)
    if isinstance(value, str):
        return text, value, None
    return text, text, None


def _source(source: Any, default: str) -> AssessmentSource:
    if source is None:
        return AssessmentSource(default)
    if isinstance(source, AssessmentSource):
        return source
    if isinstance(source, str):
        return AssessmentSource(source)
    if isinstance(source, Mapping):
        return AssessmentSource(**source)
    raise TypeError(f"source must be an AssessmentSource, not {type(source).__name__}")


def _error(error: Any) -> AssessmentError | None:
    if error is None or isinstance(error, AssessmentError):
        return error
    if isinstance(error, BaseException):
        return AssessmentError(str(error) or type(error).__name__, type(error).__name__)
    if isinstance(error, str):
        return AssessmentError(error)
    if isinstance(error, Mapping):
        return AssessmentError(**error)
    raise TypeError(f"error must be an AssessmentError, an exception or a str, not {type(error).__name__}")


def _text(name: str, value: Any) -> str | None:
    return None if value is None else check_text(name, value)


def _metadata(metadata: Any) -> dict[str, Any] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise TypeError(f"metadata must be a dict, not {type(metadata).__name__}")
    check_value(dict(metadata), "metadata")
    return dict(metadata)


def check_name(name: Any) -> str:
    """A valid assessment name (non-empty str, at most MAX_NAME_CHARS)."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"name must be a non-empty str, not {name!r}")
    if len(name) > MAX_NAME_CHARS:
        raise ValueError(f"name is {len(name)} characters long; the limit is {MAX_NAME_CHARS}")
    return name


def build_row(kind: str, target: tuple[str, str], name: str, value: Any, source: AssessmentSource,
              rationale: str | None, metadata: dict[str, Any] | None, error: AssessmentError | None,
              span_id: str | None, project: str, overrides: str | None = None) -> dict[str, Any]:
    """The stored form of a validated assessment."""
    value_json, value_str, value_num = value_forms(value)
    now = int(time.time() * 1000)
    target_kind, target_id = target
    return {
        # Time-ordered ids: among assessments created in the same millisecond, the greater id is
        # the later one, so "the latest valid assessment" is always well defined.
        "assessment_id": f"a-{time.time_ns():016x}{uuid.uuid4().hex[:16]}",
        "trace_id": None,  # resolved by the store within the project, else pending
        "project": project,
        "target_kind": target_kind,
        "target": target_id,
        "span_id": span_id,
        "kind": kind,
        "name": name,
        "value_json": value_json,
        "value_str": value_str,
        "value_num": value_num,
        "source_type": source.source_type,
        "source_id": source.source_id,
        "rationale": rationale,
        # ensure_ascii=False (as for value_json): a lone surrogate stays one, and storing it fails
        # cleanly instead of writing a \ud800 escape that no JSON answer could carry back
        "metadata_json": json.dumps(metadata, ensure_ascii=False) if metadata else None,
        "error_json": json.dumps({"error_message": error.error_message, "error_code": error.error_code},
                                 ensure_ascii=False) if error else None,  # fmt: skip
        "valid": True,
        "overrides": overrides,
        "create_time": now,
        "last_update_time": now,
    }


def log_feedback(
    trace_id: str | None = None,
    *,
    client_request_id: str | None = None,
    response_id: str | None = None,
    name: str,
    value: Any = None,
    source: AssessmentSource | None = None,
    rationale: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    error: AssessmentError | BaseException | str | None = None,
    span_id: str | None = None,
    store: Any = None,
) -> Assessment:
    """Attach a judgement of a trace's output (a bool, number, str, list or dict).

    ``source`` defaults to ``AssessmentSource("CODE")``. ``error`` records a judge that failed to
    produce a value; one of ``value`` and ``error`` is required.
    """
    target = _target(trace_id, client_request_id, response_id)
    check_value(value)
    err = _error(error)
    if value is None and err is None:
        raise ValueError("log_feedback needs a value or an error")
    destination = resolve_store(store)
    row = build_row("feedback", target, check_name(name), value, _source(source, "CODE"),
                    _text("rationale", rationale), _metadata(metadata), err, _text("span_id", span_id),
                    _project(destination))  # fmt: skip
    return destination.log_assessment(row)


def log_expectation(
    trace_id: str | None = None,
    *,
    client_request_id: str | None = None,
    response_id: str | None = None,
    name: str,
    value: Any,
    source: AssessmentSource | None = None,
    metadata: Mapping[str, Any] | None = None,
    span_id: str | None = None,
    store: Any = None,
) -> Assessment:
    """Attach the expected output of a trace (ground truth); ``source`` defaults to HUMAN."""
    target = _target(trace_id, client_request_id, response_id)
    check_value(value)
    if value is None:
        raise ValueError("log_expectation needs a value")
    destination = resolve_store(store)
    row = build_row("expectation", target, check_name(name), value, _source(source, "HUMAN"), None,
                    _metadata(metadata), None, _text("span_id", span_id), _project(destination))  # fmt: skip
    return destination.log_assessment(row)


def _project(store: Any) -> str:
    """The project an assessment belongs to: the store view's, else the configured one."""
    scoped = getattr(store, "project", None)
    if scoped:
        return scoped
    from .config import current_setup  # noqa: PLC0415

    setup = current_setup()
    return setup.settings.project if setup is not None else "default"


def get_assessment(assessment_id: str, store: Any = None) -> Assessment:
    """The assessment with this id; raises :class:`AssessmentNotFoundError` if there is none."""
    found = resolve_store(store).get_assessment(assessment_id)
    if found is None:
        raise AssessmentNotFoundError(f"no assessment {assessment_id!r}")
    return found


_UNSET: Any = object()


def update_assessment(
    assessment_id: str,
    *,
    value: Any = _UNSET,
    rationale: Any = _UNSET,
    metadata: Mapping[str, Any] | None = None,
    error: Any = _UNSET,
    source: AssessmentSource | None = None,
    store: Any = None,
) -> Assessment:
    """Change an assessment in place; ``metadata`` is merged into what it has."""
    target = resolve_store(store)
    current = get_assessment(assessment_id, store=target)
    changes: dict[str, Any] = {}
    if value is not _UNSET:
        check_value(value)
        changes["value_json"], changes["value_str"], changes["value_num"] = value_forms(value)
    if rationale is not _UNSET:
        changes["rationale"] = _text("rationale", rationale)
    if error is not _UNSET:
        err = _error(error)
        changes["error_json"] = (
            json.dumps({"error_message": err.error_message, "error_code": err.error_code}, ensure_ascii=False)
            if err else None
        )
    if metadata is not None:
        changes["metadata_json"] = json.dumps({**current.metadata, **(_metadata(metadata) or {})}, ensure_ascii=False)
    if source is not None:
        src = _source(source, current.source.source_type)
        changes["source_type"], changes["source_id"] = src.source_type, src.source_id
    if not changes:
        return current
    has_value = changes["value_json"] is not None if "value_json" in changes else current.value is not None
    has_error = changes["error_json"] is not None if "error_json" in changes else current.error is not None
    if not has_value and not has_error:
        raise ValueError("an assessment needs a value or an error")
    target.update_assessment(assessment_id, changes)
    return get_assessment(assessment_id, store=target)


def override_feedback(
    assessment_id: str,
    value: Any,
    rationale: str | None = None,
    source: AssessmentSource | None = None,
    metadata: Mapping[str, Any] | None = None,
    store: Any = None,
) -> Assessment:
    """Replace a feedback's value with a new assessment; the old one stays, marked invalid.

    The new assessment records the old one's id in ``overrides``; deleting it restores the old.
    """
    target = resolve_store(store)
    old = get_assessment(assessment_id, store=target)
    if old.kind != "feedback":
        raise ValueError(f"assessment {assessment_id!r} is an expectation; only feedback can be overridden")
    check_value(value)
    if value is None:
        raise ValueError("override_feedback needs a value")
    row = build_row("feedback", (old.target_kind, old.target), old.name, value,
                    _source(source, "HUMAN"), _text("rationale", rationale), _metadata(metadata),
                    None, old.span_id, old.project, overrides=old.assessment_id)  # fmt: skip
    if old.trace_id:
        row["trace_id"] = old.trace_id
    return target.override_assessment(old, row)


def delete_assessment(assessment_id: str, store: Any = None) -> None:
    """Delete an assessment; if it had overridden another, that one is valid again."""
    target = resolve_store(store)
    target.delete_assessment(get_assessment(assessment_id, store=target))


def list_pending_assessments(store: Any = None) -> list[Assessment]:
    """Assessments logged for traces that are not stored (yet)."""
    return resolve_store(store).pending_assessments()
