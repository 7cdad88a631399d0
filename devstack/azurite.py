"""Azurite, the Azure Storage emulator (blob, queue, table), on free loopback ports.

Azurite comes from ``devstack/node_modules`` (``scripts/bootstrap.sh`` runs ``npm ci``
there). Typical use::

    with Azurite() as azurite:
        QueueClient.from_connection_string(azurite.connection_string, "q")

Persistence: by default Azurite keeps its data in a scratch folder beside its log,
emptied at every start, so ``restart()`` comes back empty. Pass ``persistent_dir`` to
keep data; then ``restart()`` (which stops Azurite with SIGTERM, letting it save its
metadata) keeps queues, messages, blobs and tables; Azurite saves its metadata every 5 s
and on a clean shutdown.

Never ``--inMemoryPersistence``: there every queue message is an extent of its own, and
Azurite 3.35's garbage collection deletes the extents of consumed messages one by one,
rebuilding an index of all of them each time. 5,000 consumed messages froze it for 42 s
(no request answered); 20,000 for minutes. On disk, messages share a few extent files.

Azurite runs in its own process group; ``stop()``, the garbage collection of the
``Azurite`` object (keep a reference while you use it) and interpreter exit end it, and
the kernel SIGTERMs it if the Python process dies outright (``setpriv --pdeathsig``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import weakref
from pathlib import Path
from typing import IO, Self

from devstack.lifecycle import Service
from devstack.ports import LOOPBACK, free_port, wait_for_port

log = logging.getLogger(__name__)

DEVSTACK_DIR = Path(__file__).resolve().parent
AZURITE_BIN = DEVSTACK_DIR / "node_modules" / ".bin" / "azurite"

# The well-known development account every Azurite accepts (published by Microsoft).
ACCOUNT_NAME = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_LOG_TAIL_LINES = 40
_LAUNCH_MARK = "=== azurite launch"
# Fresh ports are tried this many times when another process grabs one of them between
# free_port() and Azurite's bind.
_START_ATTEMPTS = 3


class AzuriteError(RuntimeError):
    """Azurite could not be started."""


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    """Send ``sig`` to Azurite's process group (its own PID: it is the session leader)."""
    if proc.poll() is not None:
        return  # already reaped: the PID may belong to someone else by now
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _terminate(proc: subprocess.Popen[bytes], timeout: float = _STOP_TIMEOUT) -> None:
    """SIGTERM the group, then SIGKILL it if it has not exited within ``timeout``."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=timeout)


def _kill_at_exit(proc: subprocess.Popen[bytes], log_file: IO[bytes]) -> None:
    """Finalizer: never leave a node process behind when a test run ends badly."""
    _terminate(proc, timeout=3.0)
    log_file.close()


class Azurite(Service):
    """One Azurite process serving blob, queue and table on free loopback ports.

    ``persistent_dir=None`` (default): data lives in ``<log dir>/data``, emptied at every
    start, so it is lost on ``restart()``. With a directory, ``--location DIR`` keeps
    data across ``restart()``.
    Ports are chosen on the first ``start()`` and kept for every later start.

    ``log_path`` keeps one line per request; ``debug_log`` writes Azurite's very
    verbose ``--debug`` log to ``debug_log_path``. ``log_dir`` defaults to a new
    temporary directory, deleted by ``cleanup()`` and by a ``with`` block that ends
    without an exception.
    """

    def __init__(
        self,
        persistent_dir: Path | None = None,
        *,
        debug_log: bool = False,
        log_dir: Path | None = None,
    ) -> None:
        self.persistent_dir = persistent_dir
        self.debug_log = debug_log
        self._own_log_dir = log_dir is None
        self._log_dir = Path(tempfile.mkdtemp(prefix="azurite-")) if log_dir is None else log_dir
        self._log_dir.mkdir(parents=True, exist_ok=True)
        self._ports: tuple[int, int, int] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._finalizer: weakref.finalize[..., Azurite] | None = None

    # -- properties ----------------------------------------------------------------

    @property
    def log_path(self) -> Path:
        """Azurite's stdout and stderr, appended across restarts."""
        return self._log_dir / "azurite.log"

    @property
    def debug_log_path(self) -> Path:
        """Azurite's ``--debug`` log (written only with ``debug_log=True``)."""
        return self._log_dir / "debug.log"

    @property
    def blob_port(self) -> int:
        return self._port(0)

    @property
    def queue_port(self) -> int:
        return self._port(1)

    @property
    def table_port(self) -> int:
        return self._port(2)

    @property
    def blob_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.blob_port}/{ACCOUNT_NAME}"

    @property
    def queue_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.queue_port}/{ACCOUNT_NAME}"

    @property
    def table_endpoint(self) -> str:
        return f"http://{LOOPBACK}:{self.table_port}/{ACCOUNT_NAME}"

    @property
    def connection_string(self) -> str:
        """Explicit connection string: ``UseDevelopmentStorage=true`` means the default ports."""
        return (
            "DefaultEndpointsProtocol=http;"
            f"AccountName={ACCOUNT_NAME};"
            f"AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={self.blob_endpoint};"
            f"QueueEndpoint={self.queue_endpoint};"
            f"TableEndpoint={self.table_endpoint};"
        )

    @property
    def pid(self) -> int | None:
        """PID of the running node process (also its process group), else None."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _port(self, index: int) -> int:
        if self._ports is None:
            raise RuntimeError("Azurite has not been started yet: its ports are not chosen")
        return self._ports[index]

    # -- lifecycle -----------------------------------------------------------------

    def start(self) -> Self:
        """Start Azurite and wait until blob, queue and table all accept connections."""
        if self.running:
            raise RuntimeError("Azurite is already running")
        if not AZURITE_BIN.exists():
            raise AzuriteError(
                f"{AZURITE_BIN} is missing: run scripts/bootstrap.sh "
                "(or `npm ci` in devstack/) to install Azurite"
            )
        node = shutil.which("node")
        if node is None:
            raise AzuriteError("node is not on PATH: run scripts/bootstrap.sh to install Node.js")
        if self._ports is not None:
            # A restart must come back on the same ports: clients hold the old endpoints.
            self._launch(node, self._ports)
            return self
        for attempt in range(1, _START_ATTEMPTS + 1):
            ports = self._pick_ports()
            try:
                self._launch(node, ports)
            except AzuriteError:
                if attempt == _START_ATTEMPTS or "EADDRINUSE" not in self._log_tail():
                    raise
                log.warning("Azurite lost a port race on %s, retrying with fresh ports", ports)
            else:
                self._ports = ports
                return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop Azurite (SIGTERM to its group, SIGKILL after a timeout); idempotent."""
        self._shutdown(signal.SIGTERM)

    def restart(self) -> None:
        """Stop and start again on the same ports; data survives only with ``persistent_dir``."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop Azurite and delete the temporary log directory this object created."""
        self.stop()
        if self._own_log_dir:
            shutil.rmtree(self._log_dir, ignore_errors=True)

    def _exit(self, failed: bool) -> None:
        if not failed:
            self.cleanup()
        else:
            # Keep the log: whatever failed may show up in Azurite's output.
            self.stop()
            log.info("Azurite log kept at %s", self.log_path)

    # -- internals -----------------------------------------------------------------

    @staticmethod
    def _pick_ports() -> tuple[int, int, int]:
        # free_port() closes its socket before returning, so two calls can, rarely,
        # return the same number.
        ports: list[int] = []
        while len(ports) < 3:
            port = free_port()
            if port not in ports:
                ports.append(port)
        return ports[0], ports[1], ports[2]

    def _command(self, node: str, ports: tuple[int, int, int]) -> list[str]:
        blob, queue, table = ports
        cmd = [
            node,
            str(AZURITE_BIN),
            "--blobHost", LOOPBACK, "--blobPort", str(blob),
            "--queueHost", LOOPBACK, "--queuePort", str(queue),
            "--tableHost", LOOPBACK, "--tablePort", str(table),
            # The storage SDKs ask for newer service API versions than 3.35 knows.
            "--skipApiVersionCheck",
            # Ignore headers and parameters Azurite does not implement instead of failing.
            "--loose",
            "--disableTelemetry",
        ]  # fmt: skip
        location = self.persistent_dir
        if location is None:
            location = self._log_dir / "data"
            shutil.rmtree(location, ignore_errors=True)  # every start comes back empty
        location.mkdir(parents=True, exist_ok=True)
        cmd += ["--location", str(location)]
        if self.debug_log:
            cmd += ["--debug", str(self.debug_log_path)]
        if threading.current_thread() is threading.main_thread() and shutil.which("setpriv"):
            # The kernel SIGTERMs Azurite if this process dies even by SIGKILL, where no
            # finalizer runs. Only from the main thread: the signal fires when the
            # *thread* that forked it exits. setpriv execs node, so the PID stays node's.
            cmd = ["setpriv", "--pdeathsig", "TERM", "--", *cmd]
        return cmd

    def _launch(self, node: str, ports: tuple[int, int, int]) -> None:
        cmd = self._command(node, ports)
        log_file = self.log_path.open("ab")
        log_file.write(f"\n{_LAUNCH_MARK} {time.strftime('%H:%M:%S')} {' '.join(cmd)}\n".encode())
        log_file.flush()
        began = time.monotonic()
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            # In memory mode Azurite still writes small files to its workspace (the cwd).
            cwd=self.persistent_dir or self._log_dir,
            # Own session and process group: stop() signals exactly Azurite's group,
            # and a Ctrl-C meant for pytest does not reach node first.
            start_new_session=True,
        )
        self._proc, self._log_file = proc, log_file
        self._finalizer = weakref.finalize(self, _kill_at_exit, proc, log_file)
        try:
            self._wait_listening(proc, ports)
        except AzuriteError:
            self._shutdown(signal.SIGKILL)
            raise
        log.info(
            "Azurite pid %d listening (blob %d, queue %d, table %d) after %.2fs; log %s",
            proc.pid, *ports, time.monotonic() - began, self.log_path,
        )  # fmt: skip

    def _wait_listening(self, proc: subprocess.Popen[bytes], ports: tuple[int, int, int]) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        for port, service in zip(ports, ("blob", "queue", "table"), strict=True):
            while True:
                if proc.poll() is not None:
                    raise AzuriteError(
                        f"Azurite exited with code {proc.returncode} during startup "
                        f"(blob/queue/table ports {ports})" + self._diagnosis()
                    )
                try:
                    # Short waits so a crashed node is noticed at once.
                    wait_for_port(port, timeout=0.2, what=f"Azurite {service}")
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise AzuriteError(
                            f"Azurite {service} did not listen on {LOOPBACK}:{port} "
                            f"within {_START_TIMEOUT}s" + self._diagnosis()
                        ) from None

    def _shutdown(self, sig: signal.Signals) -> None:
        proc, log_file, finalizer = self._proc, self._log_file, self._finalizer
        self._proc = self._log_file = self._finalizer = None
        if finalizer is not None:
            finalizer.detach()
        if proc is not None:
            if sig == signal.SIGKILL:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=_STOP_TIMEOUT)
            else:
                _terminate(proc)
        if log_file is not None:
            log_file.close()

    def _log_tail(self) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        # Only the latest launch: earlier ones (before a restart) are not the failure.
        latest = text[text.rfind(_LAUNCH_MARK) :] if _LAUNCH_MARK in text else text
        return "\n".join(latest.splitlines()[-_LOG_TAIL_LINES:])

    def _diagnosis(self) -> str:
        hint = ""
        if not AZURITE_BIN.exists():
            hint = "\nAzurite is not installed: run scripts/bootstrap.sh."
        return f"\n--- last lines of {self.log_path} ---\n{self._log_tail()}{hint}"
