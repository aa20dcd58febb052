"""``configure()``: connect traceduck to OpenTelemetry and to a trace store.

traceduck adds ONE span processor to the application's ``TracerProvider`` (or installs a provider
when the application has none): a :class:`~traceduck.roots.RootSpanTracker`, whose settings and
writer are replaced in place, so ``configure()`` may be called again (tests, notebooks) without
stacking processors.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import threading
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from opentelemetry import trace as otel_trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from . import attributes as attr
from .roots import RootSpanTracker

if TYPE_CHECKING:
    from .store.base import TraceStore

logger = logging.getLogger("traceduck")

DEFAULT_STORE = "traceduck.duckdb"
TRACER_NAME = "traceduck"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={raw!r} is not a whole number") from exc


#: Default bound of the span queue, in spans: local mode, and remote mode (bigger queued spans).
LOCAL_MAX_QUEUE_SIZE = 100_000
REMOTE_MAX_QUEUE_SIZE = 20_000


@dataclass
class Settings:
    """What ``configure()`` was given, after defaults; ``traceduck.settings()`` returns it."""

    store: str
    service_name: str | None = None
    environment: str | None = None
    project: str = "default"
    api_key: str | None = None
    max_queue_size: int = LOCAL_MAX_QUEUE_SIZE
    max_batch_size: int = 20_000
    flush_interval: float = 0.2
    lock_timeout: float = 10.0
    #: Write batches from a child process (DuckDB then never competes for the app's GIL).
    writer_process: bool = True
    #: Capture facets and PII mode given to configure() (stored as the project's settings).
    capture: Any = None
    pii: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_remote(self) -> bool:
        return self.store.startswith(("http://", "https://"))


@dataclass
class _Setup:
    settings: Settings
    provider: TracerProvider
    tracer: otel_trace.Tracer
    tracker: RootSpanTracker
    store: TraceStore | None
    span_processor: SpanProcessor | None


_lock = threading.RLock()
_setup: _Setup | None = None
#: The tracker added to each provider, held no longer than the provider (an id() would be taken
#: by a new provider once the old one is freed, which then never got a tracker).
_trackers: weakref.WeakKeyDictionary[Any, RootSpanTracker] = weakref.WeakKeyDictionary()
_installed_provider: TracerProvider | None = None
#: After shutdown() (explicit, or at interpreter exit) tracing records nothing until the next
#: configure(), instead of quietly setting up the defaults again.
_shut_down = False


def _provider_for(settings: Settings, tracer_provider: TracerProvider | None) -> TracerProvider:
    global _installed_provider
    if tracer_provider is not None:
        return tracer_provider
    current = otel_trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current  # the application's own provider (or the one we installed earlier)
    if hasattr(current, "add_span_processor"):
        return current  # type: ignore[return-value]
    resource_attrs: dict[str, Any] = {}
    if settings.service_name:
        resource_attrs["service.name"] = settings.service_name
    if settings.environment:
        resource_attrs["deployment.environment.name"] = settings.environment
    provider = TracerProvider(resource=Resource.create(resource_attrs))
    otel_trace.set_tracer_provider(provider)
    _installed_provider = provider
    return provider


def _root_attributes(settings: Settings) -> dict[str, str]:
    defaults: dict[str, str] = {}
    if settings.service_name:
        defaults[attr.SERVICE_NAME] = settings.service_name
    if settings.environment:
        defaults[attr.ENVIRONMENT] = settings.environment
    out: dict[str, str] = {}
    if defaults:
        out[attr.TRACE_DEFAULT_METADATA] = json.dumps(defaults)
    if settings.project != "default":
        out[attr.TRACE_PROJECT] = settings.project
    return out


def configure(
    store: str | os.PathLike[str] | None = None,
    *,
    service_name: str | None = None,
    environment: str | None = None,
    project: str | None = None,
    api_key: str | None = None,
    tracer_provider: TracerProvider | None = None,
    max_queue_size: int | None = None,
    max_batch_size: int | None = None,
    flush_interval: float | None = None,
    lock_timeout: float | None = None,
    writer_process: bool | None = None,
    capture: Any = None,
    pii: str | None = None,
) -> Settings:
    """Set where traces go and connect traceduck to OpenTelemetry.

    ``store`` is a DuckDB file path (default: env ``TRACEDUCK_STORE``, else ``./traceduck.duckdb``)
    or the URL of a traceduck collector (``http://host:4318``). If the application already set an
    OTel ``TracerProvider`` traceduck adds its processor to it, otherwise it installs one.
    Calling any tracing function without ``configure()`` configures the defaults.

    ``capture`` (``"all"``, ``"none"``, ``"prompt,response,latency"``, a list or ``{facet: bool}``)
    and ``pii`` (``"off"``, ``"detect"``, ``"redact"``) change the project's settings in a local
    store (an audit event when they change); left out, the stored settings stay, and a project
    never configured captures every facet with PII off (see ``docs/governance.md``).

    Raises :class:`~traceduck.StoreLockedError` if another process already writes to the file.
    """
    global _setup, _shut_down
    from .processor import StoreSpanProcessor  # noqa: PLC0415  (keeps the API free of storage)

    where = os.fspath(store) if store is not None else os.environ.get("TRACEDUCK_STORE", DEFAULT_STORE)
    # A queued span is a compact row locally (~0.3 KB) but a whole OTel span object in remote mode
    # (~3 KB, measured in bench/faults.py): a smaller default bound keeps the same memory budget.
    default_queue = REMOTE_MAX_QUEUE_SIZE if where.startswith(("http://", "https://")) else LOCAL_MAX_QUEUE_SIZE
    settings = Settings(
        store=where,
        service_name=service_name,
        environment=environment,
        project=project or os.environ.get("TRACEDUCK_PROJECT", "default"),
        api_key=api_key or os.environ.get("TRACEDUCK_API_KEY"),
        max_queue_size=max_queue_size or _env_int("TRACEDUCK_MAX_QUEUE_SIZE", default_queue),
        max_batch_size=max_batch_size or _env_int("TRACEDUCK_MAX_BATCH_SIZE", 20_000),
        flush_interval=flush_interval if flush_interval is not None else 0.2,
        lock_timeout=lock_timeout if lock_timeout is not None else 10.0,
        writer_process=writer_process if writer_process is not None
        else os.environ.get("TRACEDUCK_WRITER_PROCESS", "1") not in ("0", "false", "no"),
        capture=capture,
        pii=pii,
    )
    if settings.is_remote and (capture is not None or pii is not None):
        raise ValueError("a collector project's capture and PII settings are set by its owner: "
                         "`traceduck project set` or set_project_settings(..., store=URL) with an admin key")
    if not settings.is_remote and settings.writer_process:
        _check_detectors_portable()
    with _lock:
        shutdown()
        _shut_down = False
        provider = _provider_for(settings, tracer_provider)
        store_obj = None
        if settings.is_remote:
            from .remote import remote_span_processor  # noqa: PLC0415

            span_processor: SpanProcessor = remote_span_processor(settings)
        else:
            from .store.duckdb_store import open_store  # noqa: PLC0415

            store_obj = open_store(settings.store, lock_timeout=settings.lock_timeout)
            store_obj.acquire_writer()
            if capture is not None or pii is not None:
                from .governance.projects import set_project_settings  # noqa: PLC0415

                try:
                    set_project_settings(settings.project, capture=capture, pii=pii, store=store_obj, actor="sdk")
                except BaseException:
                    store_obj.release_writer()
                    raise
            writer: Any = store_obj
            if settings.writer_process:
                from .store.writer_process import WriterProcess  # noqa: PLC0415

                writer = WriterProcess(store_obj)
                writer.start()
                store_obj.file.writes_elsewhere = True
            span_processor = StoreSpanProcessor(
                writer,
                max_queue_size=settings.max_queue_size,
                max_batch_size=settings.max_batch_size,
                flush_interval=settings.flush_interval,
                default_project=settings.project,
            )
        tracker = _trackers.get(provider)
        if tracker is None:
            tracker = RootSpanTracker()
            provider.add_span_processor(tracker)
            _trackers[provider] = tracker
        tracker.root_attributes = _root_attributes(settings) or None
        if isinstance(span_processor, StoreSpanProcessor):
            span_processor.root_attributes = tracker.root_attributes
        tracker.processor = span_processor
        tracer = provider.get_tracer(TRACER_NAME)
        _setup = _Setup(settings, provider, tracer, tracker, store_obj, span_processor)
    return settings


def _check_detectors_portable() -> None:
    from .governance import pii  # noqa: PLC0415

    if pii.non_portable():
        raise ValueError(f"custom PII detector(s) {', '.join(pii.non_portable())} cannot be imported by the writer "
                         "process: define them at module level of an importable module, or "
                         "configure(writer_process=False)")  # fmt: skip


def get_tracer() -> otel_trace.Tracer:
    """The tracer traceduck records with; configures the defaults on first use."""
    setup = _setup
    if setup is None:
        if _shut_down:
            return otel_trace.NoOpTracer()
        with _lock:
            if _setup is None:
                configure()
            setup = _setup
    assert setup is not None
    return setup.tracer


def current_setup() -> _Setup | None:
    return _setup


def settings() -> Settings:
    """The active settings (configuring the defaults if nothing was configured yet)."""
    get_tracer()
    assert _setup is not None
    return _setup.settings


def flush(timeout: float = 30.0) -> bool:
    """Write everything recorded so far; True if it all got written within ``timeout`` seconds."""
    setup = _setup
    if setup is None or setup.span_processor is None:
        return True
    return setup.span_processor.force_flush(int(timeout * 1000))


def stats() -> dict[str, Any]:
    """Counters of the active span processor: queued, written, dropped and failed spans."""
    setup = _setup
    processor_stats = getattr(setup.span_processor, "stats", None) if setup else None
    if processor_stats is None:
        return {"queued": 0, "written_spans": 0, "written_traces": 0, "dropped_spans": 0,
                "failed_spans": 0, "uncaptured_spans": 0, "batches": 0, "last_error": None}
    return processor_stats.as_dict()


def shutdown() -> None:
    """Flush and stop traceduck's processor and release the store (configure() may follow)."""
    global _setup, _shut_down
    with _lock:
        setup, _setup = _setup, None
        if setup is None:
            return
        _shut_down = True
        setup.tracker.shutdown()
        if setup.store is not None:
            setup.store.file.writes_elsewhere = False
            setup.store.release_writer()


atexit.register(shutdown)
