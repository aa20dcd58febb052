"""Data governance: what each project captures, PII, retention, the audit log and SFT export.

- ``policy.py``: capture facets, :class:`ProjectSettings` and the CLI forms of their values;
- ``pii.py``: the detector protocol, :func:`register_pii_detector`, ``detect``/``redact``;
  ``detectors.py``: the built-in detectors;
- ``apply.py``: the one function that applies a project's settings to spans before they are written;
- ``projects.py``: where settings live, :func:`set_project_settings`, :func:`get_project_settings`;
- ``retention.py``: :func:`purge` (and compaction);
- ``audit.py``: the hash-chained audit log, :func:`audit_events`, :func:`verify_audit`;
- ``export.py``: :func:`export_sft`, OpenAI chat fine-tuning JSONL;
- ``store.py``: these as methods of a store; ``cli.py``: the commands.

``docs/governance.md`` explains the choices.
"""

from __future__ import annotations

from .audit import AuditEvent, AuditProblem, AuditVerification, audit_events, verify_audit
from .export import SftExport, export_sft
from .pii import PiiDetector, PiiMatch, register_pii_detector
from .policy import FACETS, CapturePolicy, ProjectSettings
from .projects import get_project_settings, set_project_settings
from .retention import PurgeReport, purge

__all__ = [
    "FACETS",
    "AuditEvent",
    "AuditProblem",
    "AuditVerification",
    "CapturePolicy",
    "PiiDetector",
    "PiiMatch",
    "ProjectSettings",
    "PurgeReport",
    "SftExport",
    "audit_events",
    "export_sft",
    "get_project_settings",
    "purge",
    "register_pii_detector",
    "set_project_settings",
    "verify_audit",
]
