"""What a project captures and keeps: capture facets, PII mode, retention and a size cap.

A *facet* is one kind of data a trace can carry (the prompt, the response, who the user is, ...).
A project captures a facet only when it is enabled; everything of a disabled facet is dropped
before it is written (see ``apply.py``). :func:`facet_of` decides which facet a metadata key, tag
key or span attribute belongs to; ``docs/governance.md`` lists the mapping.

Defaults: a local store (the SDK writing its own file) captures every facet with PII off; a
collector project captures nothing until its owner opts in (except while the collector is open,
i.e. no API key was ever created: local development).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

#: Context fields of the GitLab proposal: one facet each, stored as the reserved metadata keys.
CONTEXT_FACETS = (
    "context.user_group",
    "context.project",
    "context.project_supergroup",
    "context.code_owner",
    "context.data_classification",
    "context.routing",
)
FACETS = (
    "prompt",
    "response",
    "user_identity",
    "token_usage",
    "latency",
    "custom_metadata",
    *CONTEXT_FACETS,
)
#: Other names accepted on input (``--capture inputs,outputs``); ``context`` means all six.
FACET_ALIASES = {
    "inputs": "prompt", "input": "prompt", "request": "prompt",
    "outputs": "response", "output": "response",
    "user": "user_identity", "identity": "user_identity",
    "tokens": "token_usage", "usage": "token_usage",
    "timestamps": "latency", "timing": "latency",
    "metadata": "custom_metadata",
}  # fmt: skip
FACET_GROUPS = {"context": CONTEXT_FACETS}

PII_MODES = ("off", "detect", "redact")
RETENTION_DAYS = (30, 90, 120)
DAY_MS = 24 * 3600 * 1000

# -- which facet a key belongs to ------------------------------------------------------------

_USER_KEYS = frozenset({"trace.user", "mlflow.trace.user", "user.id", "enduser.id", "user_id", "user",
                        "client.address", "http.client_ip"})  # fmt: skip
_USER_PREFIXES = ("enduser.", "user.")
_PROMPT_KEYS = frozenset({"gen_ai.prompt", "gen_ai.input.messages", "gen_ai.system_instructions",
                          "input.value", "llm.prompts", "gen_ai.tool.call.arguments"})  # fmt: skip
_PROMPT_PREFIXES = ("gen_ai.prompt.", "llm.input_messages.", "llm.prompts.")
_RESPONSE_KEYS = frozenset({"gen_ai.completion", "gen_ai.output.messages", "output.value",
                            "gen_ai.tool.call.result"})  # fmt: skip
_RESPONSE_PREFIXES = ("gen_ai.completion.", "llm.output_messages.")
_TOKEN_KEYS = frozenset({"traceduck.llm.cost_usd", "traceduck.llm.usage_estimated",
                         "traceduck.llm.cached_input_tokens"})  # fmt: skip
_TOKEN_PREFIXES = ("gen_ai.usage.", "llm.token_count.")
_LATENCY = re.compile(r"(^|[._])(latency|duration|time_to_first_token|ttft)([._]|$)", re.IGNORECASE)
#: Keys that are the trace's structure, kept whenever anything is captured.
_STRUCTURAL_KEYS = frozenset({"trace.session", "trace.environment", "service.name", "service.version",
                              "session.id", "gen_ai.conversation.id", "mlflow.trace.session",
                              "pii.detected", "error.type", "mlflow.sourceRun"})  # fmt: skip
#: OpenTelemetry semantic-convention namespaces (and traceduck's own): the structure of a span.
_STRUCTURAL_PREFIXES = (
    "traceduck.", "gen_ai.", "http.", "url.", "server.", "network.", "net.", "rpc.", "db.",
    "messaging.", "code.", "exception.", "service.", "telemetry.", "otel.", "deployment.",
    "process.", "thread.", "host.", "k8s.", "cloud.", "faas.", "user_agent.", "openai.",
    "llm.", "mlflow.", "session.",
)  # fmt: skip


def facet_of(key: str) -> str | None:
    """The facet a metadata key, tag key or span attribute belongs to; None: the trace's
    structure (kept whenever the project captures anything at all).

    Span attributes outside the OpenTelemetry namespaces, and metadata keys that are not
    reserved, are custom metadata.
    """
    if key in CONTEXT_FACETS:
        return key
    if key in _USER_KEYS or key.startswith(_USER_PREFIXES):
        return "user_identity"
    if key in _PROMPT_KEYS or key.startswith(_PROMPT_PREFIXES):
        return "prompt"
    if key in _RESPONSE_KEYS or key.startswith(_RESPONSE_PREFIXES):
        return "response"
    if key in _TOKEN_KEYS or key.startswith(_TOKEN_PREFIXES):
        return "token_usage"
    if _LATENCY.search(key):
        return "latency"
    if key in _STRUCTURAL_KEYS or key.startswith(_STRUCTURAL_PREFIXES):
        return None
    return "custom_metadata"


# -- the settings ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturePolicy:
    """The facets a project captures (see :data:`FACETS`)."""

    facets: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def all(cls) -> CapturePolicy:
        return cls(frozenset(FACETS))

    @classmethod
    def none(cls) -> CapturePolicy:
        return cls(frozenset())

    @classmethod
    def parse(cls, value: Any) -> CapturePolicy:
        """From ``"all"``, ``"none"``, ``"prompt,response"``, a list of facets, a
        ``{facet: bool}`` mapping (facets not named are off) or a ``CapturePolicy``."""
        if isinstance(value, CapturePolicy):
            return value
        if isinstance(value, Mapping):
            unknown = [k for k in value if _canonical(k) is None]
            if unknown:
                raise ValueError(_unknown_message(unknown))
            on: set[str] = set()
            for key, enabled in value.items():
                if not isinstance(enabled, bool):
                    raise ValueError(f"capture[{key!r}] must be true or false, not {enabled!r}")
                if enabled:
                    on.update(_canonical(key) or ())
            return cls(frozenset(on))
        if isinstance(value, str):
            text = value.strip().lower()
            if text == "all":
                return cls.all()
            if text in ("none", ""):
                return cls.none()
            value = [part for part in text.split(",") if part.strip()]
        if isinstance(value, Iterable):
            names = [str(v).strip() for v in value]
            unknown = [n for n in names if _canonical(n) is None]
            if unknown:
                raise ValueError(_unknown_message(unknown))
            return cls(frozenset(f for n in names for f in (_canonical(n) or ())))
        raise TypeError(f"capture must be 'all', 'none', a comma list or a mapping, not {type(value).__name__}")

    def allows(self, facet: str | None) -> bool:
        """Whether data of ``facet`` is captured (None, the structure, whenever any facet is)."""
        return bool(self.facets) if facet is None else facet in self.facets

    @property
    def captures_all(self) -> bool:
        return self.facets >= frozenset(FACETS)

    def to_dict(self) -> dict[str, bool]:
        return {facet: facet in self.facets for facet in FACETS}

    def __str__(self) -> str:
        if self.captures_all:
            return "all"
        return ",".join(f for f in FACETS if f in self.facets) or "none"


def _canonical(name: str) -> tuple[str, ...] | None:
    key = name.strip()
    lowered = key.lower()
    if lowered in FACET_GROUPS:
        return FACET_GROUPS[lowered]
    if lowered in FACETS:
        return (lowered,)
    if lowered in FACET_ALIASES:
        return (FACET_ALIASES[lowered],)
    if "context." + lowered in CONTEXT_FACETS:
        return ("context." + lowered,)
    return None


def _unknown_message(unknown: list[str]) -> str:
    return (f"unknown capture facet(s) {', '.join(map(repr, unknown))}; facets are {', '.join(FACETS)} "
            "(or 'context' for the six context fields, 'all', 'none')")  # fmt: skip


@dataclass(frozen=True)
class ProjectSettings:
    """A project's governance settings, stored as JSON in ``projects.settings_json``."""

    capture: CapturePolicy = field(default_factory=CapturePolicy.none)
    pii: str = "off"
    retention_days: int | None = None
    max_size_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.pii not in PII_MODES:
            raise ValueError(f"pii must be one of {', '.join(PII_MODES)}, not {self.pii!r}")
        if self.retention_days is not None and self.retention_days not in RETENTION_DAYS:
            raise ValueError(f"retention must be {', '.join(map(str, RETENTION_DAYS))} days or none, "
                             f"not {self.retention_days!r}")  # fmt: skip
        if self.max_size_bytes is not None and (isinstance(self.max_size_bytes, bool) or
                                                not isinstance(self.max_size_bytes, int) or self.max_size_bytes <= 0):
            raise ValueError(f"max_size_bytes must be a positive whole number or none, not {self.max_size_bytes!r}")

    @property
    def captures_nothing(self) -> bool:
        return not self.capture.facets

    @property
    def is_passthrough(self) -> bool:
        """Everything is stored as it came (every facet, PII off): nothing to apply."""
        return self.capture.captures_all and self.pii == "off"

    def changed(self, **changes: Any) -> ProjectSettings:
        """A copy with ``capture``, ``pii``, ``retention_days`` or ``max_size_bytes`` changed;
        values in their CLI forms (``"all"``, ``"90d"``, ``"500MB"``) are accepted."""
        values: dict[str, Any] = {}
        if changes.get("capture") is not None:
            values["capture"] = CapturePolicy.parse(changes["capture"])
        if changes.get("pii") is not None:
            values["pii"] = str(changes["pii"]).strip().lower()
        if "retention_days" in changes and changes["retention_days"] is not _KEEP:
            values["retention_days"] = parse_retention(changes["retention_days"])
        if "max_size_bytes" in changes and changes["max_size_bytes"] is not _KEEP:
            values["max_size_bytes"] = parse_size(changes["max_size_bytes"])
        return replace(self, **values)

    def to_dict(self) -> dict[str, Any]:
        return {"capture": self.capture.to_dict(), "pii": self.pii, "retention_days": self.retention_days,
                "max_size_bytes": self.max_size_bytes}  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ProjectSettings:
        return cls(
            capture=CapturePolicy.parse(data.get("capture") or {}),
            pii=data.get("pii") or "off",
            retention_days=data.get("retention_days"),
            max_size_bytes=data.get("max_size_bytes"),
        )

    @classmethod
    def from_json(cls, text: str | None) -> ProjectSettings | None:
        """The stored settings, or None for a project that was never configured."""
        if not text:
            return None
        return cls.from_dict(json.loads(text))


#: Marker: leave this setting as it is (``changed(retention_days=KEEP)``).
_KEEP = object()
KEEP = _KEEP

#: A local store's default: every facet, PII off, no age-off.
LOCAL_DEFAULT = ProjectSettings(capture=CapturePolicy.all())
#: A collector project whose owner has not opted in: nothing is captured.
COLLECTOR_DEFAULT = ProjectSettings(capture=CapturePolicy.none())

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def parse_size(value: Any) -> int | None:
    """``"500MB"``, ``"2GiB"``, ``1000000`` -> bytes; ``None``/``"none"`` -> no cap."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        if value <= 0:
            raise ValueError(f"a size cap must be positive, not {value}")
        return value
    match = _SIZE.match(str(value))
    unit = (match.group(2) or "").lower() if match else ""
    if not match or unit not in _UNITS:
        raise ValueError(f"size {value!r} is not understood; use e.g. 500MB, 2GB, 1GiB or none")
    size = int(float(match.group(1)) * _UNITS[unit])
    if size <= 0:
        raise ValueError(f"a size cap must be positive, not {value!r}")
    return size


def parse_retention(value: Any) -> int | None:
    """``"30d"``, ``"90"``, ``120`` -> days; ``None``/``"none"`` -> no age-off."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return None
    match = re.match(r"^\s*(\d+)\s*(d|days?)?\s*$", str(value).lower())
    days = int(match.group(1)) if match else None
    if days not in RETENTION_DAYS:
        raise ValueError(f"retention {value!r} is not one of 30d, 90d, 120d, none")
    return days


def format_size(size: int | None) -> str:
    if size is None:
        return "none"
    for unit, factor in (("TB", 10**12), ("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= factor and size % (factor // 1000 or 1) == 0:
            return f"{size / factor:g}{unit}"
    return f"{size}B"
