"""The composition root: settings and rules in, long-lived clients out.

Built once per process (a function app instance, a CLI run) and reused by every
invocation, as the Azure SDK and pyodbc are meant to be used. Building it validates
settings and rules and touches no network, so the app fails at start, not at the
first tick, when either is malformed.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property

from shared.export import Exporter, ExportOptions
from shared.remediation_queue import RemediationQueue
from shared.rules import RuleSet, load_rules
from shared.settings import Settings, load_settings
from shared.site_database import SiteDatabaseClient
from shared.storage import StorageAccount
from shared.watermark import WatermarkStore


class Runtime:
    """Settings, rules and the clients built from them."""

    def __init__(self, settings: Settings, rules: RuleSet | None = None) -> None:
        self.settings = settings
        self.rules = rules if rules is not None else load_rules(settings.rules_path)

    @classmethod
    def from_environment(cls) -> Runtime:
        """Read settings from the environment and the rules file they name."""
        return cls(load_settings())

    @cached_property
    def storage(self) -> StorageAccount:
        """The storage account behind AzureWebJobsStorage."""
        return StorageAccount(self.settings)

    @cached_property
    def site_database(self) -> SiteDatabaseClient:
        """The site database reader."""
        return SiteDatabaseClient(self.settings.site_db_connection.get_secret_value())

    @cached_property
    def queue(self) -> RemediationQueue:
        """The remediation queue (sending side)."""
        return RemediationQueue(self.storage.queue(self.settings.remediation_queue))

    @cached_property
    def watermarks(self) -> WatermarkStore:
        """Export progress per site."""
        return WatermarkStore(self.storage.container(self.settings.state_container))

    def export_options(self) -> ExportOptions:
        """The exporter's tuning, from settings."""
        return ExportOptions(
            overlap=self.settings.export_overlap,
            max_messages_per_run=self.settings.export_max_messages_per_run,
            start_time_utc=self.settings.export_start_time,
        )

    @cached_property
    def exporter(self) -> Exporter:
        """The export run of the timer function and of ``cmremediate export``."""
        return Exporter(
            database=self.site_database,
            queue=self.queue,
            watermarks=self.watermarks,
            rules=self.rules,
            options=self.export_options(),
        )

    def close(self) -> None:
        """Release connections and threads (the CLI and tests; the host just exits)."""
        if "site_database" in self.__dict__:
            self.site_database.close()
        if "queue" in self.__dict__:
            self.queue.close()


def quiet_sdk_logs() -> None:
    """The Azure SDK logs every HTTP request at INFO; operators need our lines, not those."""
    logging.getLogger("azure").setLevel(logging.WARNING)


_lock = threading.Lock()
_runtime: Runtime | None = None


def get_runtime() -> Runtime:
    """The process-wide runtime, built on first use from the environment."""
    global _runtime
    with _lock:
        if _runtime is None:
            quiet_sdk_logs()
            _runtime = Runtime.from_environment()
        return _runtime


def reset_runtime() -> None:
    """Forget the process-wide runtime (tests change the environment between apps)."""
    global _runtime
    with _lock:
        if _runtime is not None:
            _runtime.close()
        _runtime = None
