"""The governance side of a DuckDB store: project settings, audit log, purge and SFT export.

``DuckDBStore`` inherits these methods; ``RemoteStore`` has the same ones over the collector's
API, so every SDK function (``set_project_settings``, ``audit_events``, ``purge``,
``export_sft``, ...) works on a file and on a collector alike. A view made with
``for_project`` sees and changes only its project.
"""

from __future__ import annotations

from typing import Any

from . import audit, export, projects, retention
from .policy import ProjectSettings


class GovernanceMethods:
    """Mixed into ``DuckDBStore`` (which supplies ``file``, ``project`` and ``governance``)."""

    file: Any
    project: str | None
    governance: projects.StoreGovernance

    def _own(self, project: str | None) -> str | None:
        if self.project is not None and project is not None and project != self.project:
            raise PermissionError(f"this store view belongs to project {self.project!r}, not {project!r}")
        return project if project is not None else self.project

    # -- project settings ------------------------------------------------------------------
    def get_project_settings(self, project: str) -> ProjectSettings | None:
        with self.file.connect() as con:
            return projects.read(con, self._own(project) or project)

    def set_project_settings(self, project: str, changes: dict[str, Any], actor: str) -> ProjectSettings:
        with self.file.connect(write=True) as con:
            settings = projects.save(con, self._own(project) or project, changes, actor)
        self.governance.invalidate()
        return settings

    # -- audit log -------------------------------------------------------------------------
    def record_audit(self, actor: str, action: str, project: str | None = None, target: str | None = None,
                     before: Any = None, after: Any = None) -> audit.AuditEvent:  # fmt: skip
        with self.file.connect(write=True) as con:
            return audit.append(con, actor, action, project, target, before, after)

    def audit_events(self, project: str | None = None, after_seq: int = 0, limit: int | None = None,
                     action: str | None = None) -> list[audit.AuditEvent]:  # fmt: skip
        with self.file.connect() as con:
            return audit.list_events(con, self._own(project), after_seq, limit, action)

    def verify_audit(self, expected_head: str | None = None) -> audit.AuditVerification:
        with self.file.connect() as con:
            return audit.verify_chain(con, expected_head)

    # -- retention -------------------------------------------------------------------------
    def purge(self, dry_run: bool = False, project: str | None = None, actor: str = "sdk",
              now_ms: int | None = None, record_empty: bool = True) -> retention.PurgeReport:  # fmt: skip
        with self.file.connect(write=not dry_run) as con:
            return retention.purge_store(con, dry_run=dry_run, actor=actor, project=self._own(project),
                                         now_ms=now_ms, record_empty=record_empty)  # fmt: skip

    # -- SFT export ------------------------------------------------------------------------
    def export_sft(self, filter_string: str | None, trace_ids: list[str] | None = None, split: float | None = None,
                   seed: int = 0, redact: bool = True, progress: export.Progress | None = None,
                   actor: str = "sdk") -> export.SftExport:  # fmt: skip
        with self.file.connect() as con:
            result = export.build(con, filter_string, trace_ids, self.project, split, seed, redact, progress)
        self.record_audit(actor, audit.EXPORTED, self.project, filter_string,
                          after={k: result.manifest[k] for k in ("filter", "trace_ids", "counts", "split", "seed",
                                                                 "redacted")})  # fmt: skip
        return result
