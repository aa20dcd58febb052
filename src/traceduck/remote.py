"""Remote mode: spans go to a traceduck collector over OTLP/HTTP; reads and writes use its API.

``configure(store="http://127.0.0.1:4318", api_key=...)`` installs the standard OTLP/HTTP span
exporter in a ``BatchSpanProcessor``; ``search_traces``, ``get_trace``, ``log_feedback`` and the
curation functions reach the collector through :class:`RemoteStore`, which speaks its JSON API.
Filters are parsed locally first, so errors are identical in both modes. Needs the extra
``traceduck[remote]`` (httpx and the OTLP exporter).
"""

from __future__ import annotations

import json
import time
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

from .entities import Assessment, Trace, assessment_from_dict
from .errors import AssessmentNotFoundError, InvalidFilterError, TraceduckError, TraceNotFoundError
from .paging import InvalidPageTokenError
from .processor import QueuedSpanProcessor
from .store.query import PageRows, SearchQuery

PAGE_SIZE = 5_000


class RemoteError(TraceduckError):
    """The collector refused or failed a request; ``status`` is the HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        super().__init__(f"collector answered {status}: {message}")


class RemoteAuthError(RemoteError, PermissionError):
    """401/403: the API key is missing, invalid, revoked or lacks the right."""


def _client_module() -> Any:
    try:
        import httpx  # noqa: PLC0415
    except ImportError:
        raise ImportError("remote mode needs httpx: pip install 'traceduck[remote]'") from None
    return httpx


class RemoteStore:
    """The collector's API with the interface of a local store."""

    project: str | None = None  # the collector scopes everything by the API key's project

    def __init__(self, url: str, api_key: str | None = None, timeout: float = 30.0) -> None:
        httpx = _client_module()
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    # -- plumbing --------------------------------------------------------------------------
    def _call(self, method: str, path: str, not_found: Any = RemoteError, **kwargs: Any) -> Any:
        response = self.client.request(method, path, **kwargs)
        if response.status_code < 400:
            return response.json()
        try:
            body = response.json()
        except ValueError:
            body = {"detail": response.text}
        message = body.get("detail") if isinstance(body, dict) else str(body)
        if not isinstance(message, str):
            message = json.dumps(message)
        code = body.get("error") if isinstance(body, dict) else None
        if code == "invalid_filter":
            raise InvalidFilterError(message, int(body.get("position", 0)))
        if code == "invalid_page_token":
            raise InvalidPageTokenError(message)
        if response.status_code in (401, 403):
            raise RemoteAuthError(response.status_code, message)
        if response.status_code == 404 and not_found is not RemoteError:
            return not_found
        if response.status_code in (400, 422):
            raise ValueError(message)
        raise RemoteError(response.status_code, message)

    # -- reads -----------------------------------------------------------------------------
    def search(self, query: SearchQuery) -> PageRows:
        params: dict[str, Any] = {"include_spans": str(query.include_spans).lower()}
        if query.filter_string:
            params["filter"] = query.filter_string
        if query.order_by:
            params["order_by"] = query.order_by
        traces: list[Trace] = []
        token = query.page_token
        while True:
            size = query.page_size if query.page_size is not None else PAGE_SIZE
            page = self._call("GET", "/api/traces", params={**params, "max_results": size,
                                                           **({"page_token": token} if token else {})})  # fmt: skip
            traces.extend(Trace.from_dict(t) for t in page["traces"])
            token = page["next_page_token"]
            if query.page_size is not None or token is None:
                return PageRows(traces, token if query.page_size is not None else None)

    def count(self, node: Any, filter_string: str | None = None) -> int:
        params = {"filter": filter_string} if filter_string else {}
        return int(self._call("GET", "/api/trace_count", params=params)["count"])

    def get_trace(self, trace_id: str) -> Trace | None:
        found = self._call("GET", f"/api/traces/{trace_id}", not_found=None)
        return Trace.from_dict(found) if found else None

    def find_trace_id(self, target_kind: str, target: str) -> str | None:
        found = self._call("GET", "/api/trace_lookup", params={target_kind: target}, not_found=None)
        return found["info"]["trace_id"] if found else None

    # -- assessments -----------------------------------------------------------------------
    @staticmethod
    def _body(row: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            row["target_kind"]: row["target"],
            "name": row["name"],
            "value": json.loads(row["value_json"]) if row["value_json"] is not None else None,
            "source": {"source_type": row["source_type"], "source_id": row["source_id"]},
            "metadata": json.loads(row["metadata_json"]) if row["metadata_json"] else None,
            "span_id": row["span_id"],
        }
        if row["kind"] == "feedback":
            body["rationale"] = row["rationale"]
            body["error"] = json.loads(row["error_json"]) if row["error_json"] else None
        return body

    def log_assessment(self, row: dict[str, Any]) -> Assessment:
        path = "/api/feedback" if row["kind"] == "feedback" else "/api/expectations"
        return assessment_from_dict(self._call("POST", path, json=self._body(row)))

    def get_assessment(self, assessment_id: str) -> Assessment | None:
        found = self._call("GET", f"/api/assessments/{assessment_id}", not_found=None)
        return assessment_from_dict(found) if found else None

    def update_assessment(self, assessment_id: str, changes: dict[str, Any]) -> None:
        body: dict[str, Any] = {}
        if "value_json" in changes:
            body["value"] = json.loads(changes["value_json"]) if changes["value_json"] is not None else None
        if "rationale" in changes:
            body["rationale"] = changes["rationale"]
        if "metadata_json" in changes:
            body["metadata"] = json.loads(changes["metadata_json"])
        if "error_json" in changes:
            body["error"] = json.loads(changes["error_json"]) if changes["error_json"] else None
        if "source_type" in changes:
            body["source"] = {"source_type": changes["source_type"], "source_id": changes.get("source_id")}
        if self._call("PATCH", f"/api/assessments/{assessment_id}", not_found=None, json=body) is None:
            raise AssessmentNotFoundError(f"no assessment {assessment_id!r}")

    def override_assessment(self, old: Assessment, row: dict[str, Any]) -> Assessment:
        body = self._body(row)
        found = self._call("POST", f"/api/assessments/{old.assessment_id}/override", not_found=None,
                           json={k: body[k] for k in ("value", "rationale", "source", "metadata")})  # fmt: skip
        if found is None:
            raise AssessmentNotFoundError(f"no assessment {old.assessment_id!r}")
        return assessment_from_dict(found)

    def delete_assessment(self, assessment: Assessment) -> None:
        self._call("DELETE", f"/api/assessments/{assessment.assessment_id}", not_found=None)

    def pending_assessments(self) -> list[Assessment]:
        return [assessment_from_dict(a) for a in self._call("GET", "/api/assessments/pending")]

    # -- curation --------------------------------------------------------------------------
    def edit_tags(self, trace_ids: list[str] | None = None, node: Any = None, use_filter: bool = False,
                  replace: dict[str, Any] | None = None, add: dict[str, Any] | None = None,
                  remove: list[str] | None = None, filter_string: str | None = None) -> int:
        if replace is not None or (trace_ids is not None and len(trace_ids) == 1 and not use_filter):
            assert trace_ids is not None and len(trace_ids) == 1
            body = {"tags": replace, "add_tags": add, "remove_tags": remove}
            found = self._call("PATCH", f"/api/traces/{trace_ids[0]}", not_found=None,
                               json={k: v for k, v in body.items() if v is not None})  # fmt: skip
            return 0 if found is None else 1
        body = {"trace_ids": trace_ids, "filter": filter_string if use_filter else None,
                "add_tags": add, "remove_tags": remove}  # fmt: skip
        return int(self._call("POST", "/api/traces/tags", json={k: v for k, v in body.items() if v is not None})["updated"])

    def replace_metadata(self, trace_id: str, metadata: dict[str, Any]) -> int:
        found = self._call("PATCH", f"/api/traces/{trace_id}", not_found=None, json={"metadata": metadata})
        return 0 if found is None else 1

    # -- LLM calls -------------------------------------------------------------------------
    def select_choice(self, index: int, trace_id: str | None = None, response_id: str | None = None) -> dict[str, Any]:
        """Select another choice of a logged LLM call (``POST /api/llm/select_choice``)."""
        body = {"index": index, "trace_id": trace_id, "response_id": response_id}
        found = self._call("POST", "/api/llm/select_choice", not_found=None,
                           json={k: v for k, v in body.items() if v is not None})  # fmt: skip
        if found is None:
            named = f"response id {response_id!r}" if response_id is not None else f"trace id {trace_id!r}"
            raise TraceNotFoundError(f"no LLM call with {named}")
        return found

    # -- governance (admin key) ------------------------------------------------------------
    def get_project_settings(self, project: str) -> Any:
        from .governance.policy import ProjectSettings  # noqa: PLC0415

        found = self._call("GET", f"/api/projects/{project}/settings")
        return ProjectSettings.from_dict(found) if found.get("configured") else None

    def set_project_settings(self, project: str, changes: dict[str, Any], actor: str) -> Any:
        from .governance.policy import KEEP, CapturePolicy, ProjectSettings, parse_retention, parse_size  # noqa: PLC0415

        body: dict[str, Any] = {}
        if changes.get("capture") is not None:
            body["capture"] = CapturePolicy.parse(changes["capture"]).to_dict()
        if changes.get("pii") is not None:
            body["pii"] = changes["pii"]
        if changes.get("retention_days", KEEP) is not KEEP:
            body["retention_days"] = parse_retention(changes["retention_days"])
        if changes.get("max_size_bytes", KEEP) is not KEEP:
            body["max_size_bytes"] = parse_size(changes["max_size_bytes"])
        return ProjectSettings.from_dict(self._call("PUT", f"/api/projects/{project}/settings", json=body))

    def audit_events(self, project: str | None = None, after_seq: int = 0, limit: int | None = None,
                     action: str | None = None) -> list[Any]:  # fmt: skip
        from .governance.audit import AuditEvent  # noqa: PLC0415

        events: list[Any] = []
        while limit is None or len(events) < limit:
            params: dict[str, Any] = {"after_seq": after_seq, "limit": min(1000, (limit or 1000) - len(events))}
            if action is not None:
                params["action"] = action
            page = self._call("GET", "/api/audit", params=params)
            events += [AuditEvent(**e) for e in page["events"] if project is None or e["project"] == project]
            if page["next_after_seq"] is None:
                break
            after_seq = page["next_after_seq"]
        return events

    def verify_audit(self, expected_head: str | None = None) -> Any:
        from .governance.audit import AuditProblem, AuditVerification  # noqa: PLC0415

        found = self._call("GET", "/api/audit/verify", params={"expected_head": expected_head} if expected_head else {})
        found["problems"] = [AuditProblem(**p) for p in found["problems"]]
        return AuditVerification(**found)

    def purge(self, dry_run: bool = False, project: str | None = None, actor: str = "sdk") -> Any:
        from .governance.retention import ProjectPurge, PurgeReport  # noqa: PLC0415

        found = self._call("POST", "/api/purge", json={"dry_run": dry_run})
        return PurgeReport(found["dry_run"], found["time_ms"], [ProjectPurge(**p) for p in found["projects"]])

    def export_sft(self, filter_string: str | None, trace_ids: list[str] | None = None, split: float | None = None,
                   seed: int = 0, redact: bool = True, progress: Any = None, actor: str = "sdk") -> Any:  # fmt: skip
        from .governance.export import SftExport  # noqa: PLC0415

        body = {"filter": filter_string, "trace_ids": trace_ids, "split": split, "seed": seed, "redact": redact,
                "format": "json"}  # fmt: skip
        found = self._call("POST", "/api/export/sft", json=body)
        if progress is not None:
            progress(found["manifest"]["counts"]["matched"], found["manifest"]["counts"]["matched"])
        return SftExport(found["train"], found["validation"], found["manifest"])


#: Longest wait between two attempts to send a batch to a collector that is down: short, so
#: sending resumes soon after it returns (a refused connection costs next to nothing).
MAX_RETRY_DELAY = 2.0


class ExportSpanProcessor(QueuedSpanProcessor):
    """Export finished spans to a collector with the standard OTLP/HTTP exporter.

    The same bounded queue as the local writer: a full queue drops and COUNTS spans (the SDK's
    BatchSpanProcessor drops silently, logging each one). While the collector is down or slow,
    the batch in hand is retried with backoff, so sending resumes by itself when it returns; new
    spans beyond the queue bound are dropped and counted meanwhile, so memory stays bounded.
    """

    def __init__(self, exporter: Any, export_batch_size: int = 2048, **kwargs: Any) -> None:
        self.exporter = exporter
        self.export_batch_size = export_batch_size
        super().__init__(store=None, **kwargs)

    def _prepare(self, span: ReadableSpan) -> Any:
        return span

    def _write(self, items: list[Any]) -> None:
        from opentelemetry.sdk.trace.export import SpanExportResult  # noqa: PLC0415

        for start in range(0, len(items), self.export_batch_size):
            chunk = items[start : start + self.export_batch_size]
            delay = 0.5
            while True:
                try:
                    ok = self.exporter.export(chunk) == SpanExportResult.SUCCESS
                    error = "the collector did not accept the spans"
                except Exception as exc:  # the exporter should not raise; never let it stop us
                    ok, error = False, f"{type(exc).__name__}: {exc}"
                if ok:
                    self.stats.written_spans += len(chunk)
                    self.stats.written_traces += sum(1 for s in chunk if s.parent is None or s.parent.is_remote)
                    self.stats.batches += 1
                    break
                self.stats.last_error = error
                if time.monotonic() >= self._give_up_at:  # shutting down: do not hold up exit
                    self._give_up(sum(len(items[i : i + self.export_batch_size])
                                      for i in range(start, len(items), self.export_batch_size)),
                                  RemoteError(503, error))  # fmt: skip
                    return
                self._warn(f"traceduck could not export {len(chunk)} spans to the collector, retrying: {error}")
                time.sleep(delay)
                delay = min(delay * 2, MAX_RETRY_DELAY)

    def shutdown(self) -> None:
        super().shutdown()
        self.exporter.shutdown()


def remote_span_processor(settings: Any) -> Any:
    """The export processor with the standard OTLP/HTTP exporter pointed at the collector."""
    try:
        from opentelemetry.exporter.otlp.proto.http import Compression  # noqa: PLC0415
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter  # noqa: PLC0415
    except ImportError:
        raise ImportError(
            "remote mode needs the OTLP exporter: pip install 'traceduck[remote]'"
        ) from None
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else None
    exporter = OTLPSpanExporter(
        endpoint=settings.store.rstrip("/") + "/v1/traces",
        headers=headers,
        compression=Compression.Gzip,
    )
    return ExportSpanProcessor(
        exporter,
        export_batch_size=min(settings.max_batch_size, 2048),
        max_queue_size=settings.max_queue_size,
        # what is taken off the queue is held while it is retried: one export request at a time
        # keeps the memory bound at the queue plus one request
        max_batch_size=min(settings.max_batch_size, 2048),
        flush_interval=settings.flush_interval,
        default_project=settings.project,
    )
