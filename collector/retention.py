"""The collector's background retention job: purge every project's expired data on a timer.

A thread started with the application: it purges once at start and then every
``purge_interval`` seconds (0 turns it off), through the same ``purge`` as ``traceduck purge``.
A purge that deleted something is an audit event by ``collector:retention``.
"""

from __future__ import annotations

import logging
import threading

from traceduck.store.duckdb_store import DuckDBStore

logger = logging.getLogger("traceduck.collector")
ACTOR = "collector:retention"


class RetentionJob:
    def __init__(self, store: DuckDBStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traceduck-retention", daemon=True)

    def start(self) -> RetentionJob:
        if self.interval > 0:
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)

    def run_once(self) -> None:
        report = self.store.purge(actor=ACTOR, record_empty=False)
        self.runs += 1
        if report.traces:
            logger.info("retention: deleted %d expired traces", report.traces)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.run_once()
            except Exception:  # the job must outlive a failing purge (busy file, disk full)
                logger.exception("retention: purge failed")
            self._stop.wait(self.interval)
