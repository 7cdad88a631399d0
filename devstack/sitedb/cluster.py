"""The PostgreSQL cluster behind the site database: binaries, initdb, start, stop, destroy.

A ``Cluster`` is one temporary directory (data, socket, TLS files, server log) and the
server running on it. It knows nothing of ConfigMgr: ``SiteDatabase`` decides the
logins, the CA and the schema, and keeps the ``weakref.finalize`` that calls
``destroy()``. The watchdog process started by ``start_watchdog()`` cleans up even when
this process dies without running finalizers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from devstack.ports import LOOPBACK, free_port, wait_for_port
from devstack.tls import LOCAL_NAMES, LocalCA

log = logging.getLogger(__name__)

_START_ATTEMPTS: Final = 3
_START_TIMEOUT: Final = 30
_STOP_TIMEOUT: Final = 30
_LOG_TAIL_LINES: Final = 30

# Runs in its own process, started by start_watchdog(). It blocks on a pipe whose only
# writer is this process; EOF means we are gone (closed it on purpose, or died, even by
# SIGKILL), and then it stops the server and deletes the directory. No-op when already
# done.
_WATCHDOG: Final = r"""
import os, shutil, signal, subprocess, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
pg_ctl, data, root, user = sys.argv[1:5]
try:
    sys.stdin.buffer.read()
except BaseException:
    pass
if os.path.exists(os.path.join(data, "postmaster.pid")):
    kw = {"user": user, "group": user, "extra_groups": []} if user else {}
    subprocess.run([pg_ctl, "stop", "-D", data, "-m", "immediate", "-w", "-t", "30"],
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root, **kw)
shutil.rmtree(root, ignore_errors=True)
"""


class SiteDatabaseError(RuntimeError):
    """The stand-in site database could not be started or used."""


def pg_bin_dir() -> Path:
    """Where initdb, pg_ctl and postgres live ($CM_PG_BIN, else Debian's PostgreSQL 15)."""
    candidates = [os.environ.get("CM_PG_BIN", ""), "/usr/lib/postgresql/15/bin"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "pg_ctl").exists():
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise SiteDatabaseError(
        "PostgreSQL 15 server binaries not found: install the Debian package postgresql-15 "
        "or set CM_PG_BIN to the directory holding pg_ctl"
    )


def server_user() -> str | None:
    """initdb and postgres refuse to run as root: use the postgres OS user then."""
    return "postgres" if os.geteuid() == 0 else None


def _as_server_user(user: str | None) -> dict[str, Any]:
    return {"user": user, "group": user, "extra_groups": []} if user else {}


def _private_dir(path: Path) -> Path:
    """A new directory only its owner may enter."""
    path.mkdir(mode=0o700)
    return path


@dataclass
class Cluster:
    """One cluster directory and its server; holds no reference to the SiteDatabase, so
    the SiteDatabase's finalizer can destroy it."""

    root: Path
    pg_bin: Path
    user: str | None
    watchdog: subprocess.Popen[bytes] | None = None
    running: bool = False
    #: The loopback port of the last launch (a restart reuses it).
    port: int | None = None

    @property
    def data(self) -> Path:
        """The data directory (what pg_ctl -D names)."""
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        """The server's log file, appended to by every start."""
        return self.root / "server.log"

    def chown(self, *paths: Path) -> None:
        """Hand paths to the server's OS user (when the server runs as one)."""
        if self.user is not None:
            for path in paths:
                shutil.chown(path, user=self.user, group=self.user)

    def pg_ctl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run pg_ctl on this cluster as the server's OS user."""
        return subprocess.run(
            [str(self.pg_bin / "pg_ctl"), *args, "-D", str(self.data)],
            capture_output=True,
            text=True,
            check=check,
            cwd=self.root,
            **_as_server_user(self.user),
        )

    def initdb(self, *, owner: str, password: str) -> None:
        """Make the socket directory and the data directory; ``owner`` is the superuser."""
        (self.root / "run").mkdir()
        self.chown(self.root, self.root / "run")
        pwfile = self.root / "pwfile"
        pwfile.write_text(password + "\n")
        pwfile.chmod(0o600)
        self.chown(pwfile)
        try:
            subprocess.run(
                [
                    str(self.pg_bin / "initdb"), "-D", str(self.data),
                    "-U", owner, f"--pwfile={pwfile}", "--auth=scram-sha-256",
                    "-E", "UTF8", "--locale=C.UTF-8", "--no-sync", "--no-instructions",
                ],
                check=True, capture_output=True, text=True, cwd=self.root,
                **_as_server_user(self.user),
            )  # fmt: skip
        except subprocess.CalledProcessError as error:
            raise SiteDatabaseError(f"initdb failed:\n{error.stdout}\n{error.stderr}") from None
        finally:
            pwfile.unlink(missing_ok=True)

    def setup_tls(self, ca: LocalCA | None) -> LocalCA:
        """Server certificate and key for the cluster; TCP clients must use TLS.

        ``ca`` issues the certificate; without one the cluster makes a CA of its own in
        its directory. Returns the CA that issued it (what clients must trust).
        """
        issuer = ca or LocalCA(_private_dir(self.root / "ca"))
        tls = _private_dir(self.root / "tls")
        certificate, key = issuer.issue_files(tls, *LOCAL_NAMES)
        # pg_hba.conf: password logins, and over TCP only through TLS ("hostssl"): a
        # client that turns TLS off is refused by the server as well.
        hba = self.data / "pg_hba.conf"
        hba.write_text(
            f"local all all scram-sha-256\nhostssl all all {LOOPBACK}/32 scram-sha-256\n"
        )
        # PostgreSQL refuses a key that others may read, or that it does not own.
        self.chown(tls, certificate, key, hba)
        return issuer

    def _write_config(self, port: int, *, log_statements: bool) -> None:
        # postgresql.auto.conf is read last, so these win over postgresql.conf.
        settings = {
            "listen_addresses": LOOPBACK,
            "port": str(port),
            "unix_socket_directories": str(self.root / "run"),
            # A throwaway cluster: flushing to disk buys nothing and costs time. Commits
            # still reach the WAL before returning (synchronous_commit stays on), so a
            # crash (stop(crash=True)) loses nothing that was committed.
            "fsync": "off",
            "full_page_writes": "off",
            "wal_level": "minimal",
            "max_wal_senders": "0",
            "timezone": "UTC",
            "log_timezone": "UTC",
            "lc_messages": "C",
            "max_connections": "100",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            "log_statement": "all" if log_statements else "none",
            "ssl": "on",
            "ssl_cert_file": str(self.root / "tls" / "server.crt"),
            "ssl_key_file": str(self.root / "tls" / "server.key"),
            "ssl_min_protocol_version": "TLSv1.2",
        }
        text = "".join(f"{key} = '{value}'\n" for key, value in settings.items())
        auto = self.data / "postgresql.auto.conf"
        auto.write_text(text)
        self.chown(auto)

    def launch(self, port: int, *, log_statements: bool) -> None:
        """Start the server on ``port`` and wait until it accepts connections.

        ``log_statements`` logs every statement with its bound parameters.
        """
        self._write_config(port, log_statements=log_statements)
        with self.log_path.open("a") as log_file:
            log_file.write(f"=== start on port {port} at {time.strftime('%H:%M:%S')}\n")
        self.chown(self.log_path)
        # pg_ctl daemonizes the postmaster in its own session: a Ctrl-C meant for pytest
        # does not reach it, and stop() / the watchdog shut it down instead.
        result = self.pg_ctl(
            "start", "-w", "-t", str(_START_TIMEOUT), "-l", str(self.log_path),
            "-s", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            self.stop_server()
            raise SiteDatabaseError(
                f"PostgreSQL did not start on port {port}: {result.stderr.strip()}"
                f"\n--- {self.log_path} ---\n{self.log_tail()}"
            )
        self.running = True
        self.port = port
        wait_for_port(port, timeout=_START_TIMEOUT, what="PostgreSQL")

    def launch_on_free_port(self, *, log_statements: bool) -> None:
        """Start the server on a free loopback port (see :meth:`launch`)."""
        for attempt in range(1, _START_ATTEMPTS + 1):
            port = free_port()
            try:
                self.launch(port, log_statements=log_statements)
            except SiteDatabaseError:
                # free_port() closes its socket before returning: someone may have taken it.
                if attempt == _START_ATTEMPTS or "already in use" not in self.log_tail():
                    raise
                log.warning("site database lost a port race on %d, retrying", port)
            else:
                break

    def start_watchdog(self) -> None:
        """Start the process that stops the server and deletes the directory once this
        process is gone, however it ended."""
        self.watchdog = subprocess.Popen(
            [
                sys.executable, "-c", _WATCHDOG, str(self.pg_bin / "pg_ctl"),
                str(self.data), str(self.root), self.user or "",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip

    def psql(
        self,
        script: str,
        *,
        port: int,
        user: str,
        password: str,
        ca_bundle: Path,
        database: str,
        variables: dict[str, str],
    ) -> None:
        """Run a psql script over TLS (setup only: DDL, roles, grants).

        ``variables`` become psql variables (``-v name=value``), in this order.
        """
        env = {
            **os.environ,
            "PGPASSWORD": password,
            "PGCONNECT_TIMEOUT": "10",
            "PGSSLMODE": "verify-full",
            "PGSSLROOTCERT": str(ca_bundle),
        }
        options = [arg for name, value in variables.items() for arg in ("-v", f"{name}={value}")]
        try:
            subprocess.run(
                [
                    str(self.pg_bin / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1",
                    "-h", LOOPBACK, "-p", str(port), "-U", user, "-d", database, *options,
                ],
                input=script, check=True, capture_output=True, text=True, env=env,
                cwd=self.root,
            )  # fmt: skip
        except subprocess.CalledProcessError as error:
            raise SiteDatabaseError(f"psql setup failed:\n{error.stderr}") from None

    def log_tail(self) -> str:
        """The last lines of the server log ("" when there is none yet)."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-_LOG_TAIL_LINES:])

    def stop_server(self, *, crash: bool = False) -> None:
        """pg_ctl stop -m fast (ends sessions, clean checkpoint), then -m immediate.

        ``crash`` goes straight to -m immediate: no checkpoint, recovery at next start.
        """
        if not (self.data / "postmaster.pid").exists():
            self.running = False
            return
        for mode in ("immediate",) if crash else ("fast", "immediate"):
            result = self.pg_ctl("stop", "-m", mode, "-w", "-t", str(_STOP_TIMEOUT), check=False)
            if result.returncode == 0 or not (self.data / "postmaster.pid").exists():
                break
            log.warning("pg_ctl stop -m %s failed: %s", mode, result.stderr.strip())
        self.running = False


def destroy(cluster: Cluster) -> None:
    """Stop the server, release the watchdog and delete the directory (idempotent)."""
    try:
        cluster.stop_server()
    finally:
        shutil.rmtree(cluster.root, ignore_errors=True)
        watchdog, cluster.watchdog = cluster.watchdog, None
        if watchdog is not None:
            with contextlib.suppress(OSError):
                if watchdog.stdin is not None:
                    watchdog.stdin.close()
            try:
                watchdog.wait(timeout=_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait()
