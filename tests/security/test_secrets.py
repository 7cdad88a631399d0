"""The whole pipeline with known secret values: none of them, nor any token issued,
appears in logs (every logger at DEBUG, the worker library's too), CLI output, outcomes,
queue or poison messages, the exporter's state, settings dumps, exceptions, or what the
Functions host receives from the worker (each invocation's error, the RpcException's
stack trace, the whole response, the health endpoint's answer), on the happy path and on
the failure paths an operator meets (target down, wrong password, wrong SQL password, a
refusing web service, a settings error). The functions run as Azure runs them: through
Microsoft's worker library, the queue fed by the host's listener."""

from __future__ import annotations

import base64
import json
import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure_functions_runtime
import pytest
import requests
from azure.core.exceptions import ResourceNotFoundError
from azure.data.tables import TableClient
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import QueueClient
from typer.testing import CliRunner

import cmremediate_cli.console
import shared.app.runtime
from cmremediate_cli import main as cli
from devstack.datagen import GeneratedStatusMessage
from devstack.functions_host import HttpResult, Invocation
from devstack.queue_host import DrainReport, QueueTriggerListener
from shared.errors import ConfigurationError
from shared.platform.connection_strings import parse_odbc
from shared.platform.http import new_session
from shared.platform.retry import RetryPolicy
from shared.platform.settings import load_settings
from shared.queue.options import QueueOptions
from shared.remediation.audit_log import audit_table_name
from tests.conftest import FunctionApp, InvocationFailed, checked
from tests.remediation import scenario
from tests.remediation.conftest import FIXTURES, REPO, body_of, fixture, webservice_rules
from tests.security.conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    REST_API,
    SERVICE_PASSWORD,
    SOAP_SECRET,
    STORAGE_KEY,
)

pytestmark = pytest.mark.stack
runner = CliRunner()

WRONG_SQL_PASSWORD = "Wr0ng-SQL;Passw0rd}-for-the-tests"
WRONG_SERVICE_PASSWORD = "Wr0ng-Svc-Passw0rd-1234"
WRONG_CLIENT_SECRET = "Wr0ng-Client-Secret-9012"
WRONG_SOAP_SECRET = "Wr0ng-Soap-Secret-5678"
#: Every logger an operator could turn up (the CLI and the tests quieten "azure").
LOUD = ("azure", "urllib3", "msal", "shared", "devstack", "requests")
FRAGMENT = 16


# -- what the test looks at ----------------------------------------------------------------


@dataclass
class Evidence:
    """Every piece of text the operator (or a log pipeline) could see, by origin."""

    texts: list[tuple[str, str]] = field(default_factory=list)
    exceptions: int = 0
    #: Stack traces of failed invocations, as the worker sent them to the host.
    stack_traces: list[str] = field(default_factory=list)

    def add(self, where: str, text: object) -> None:
        self.texts.append((where, text if isinstance(text, str) else repr(text)))

    def exception(self, where: str, error: BaseException) -> None:
        """Its text, repr, args, notes and traceback, and those of its whole chain
        (suppressed contexts too: an error reporter may walk them)."""
        seen: set[int] = set()
        current: BaseException | None = error
        pending = [error]
        while pending:
            current = pending.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            self.exceptions += 1
            self.add(f"{where}: exception", str(current))
            self.add(f"{where}: repr", repr(current))
            self.add(f"{where}: args", repr(current.args))
            self.add(f"{where}: notes", repr(getattr(current, "__notes__", None)))
            self.add(f"{where}: traceback", "".join(traceback.format_exception(current)))
            pending += [current.__cause__, current.__context__]  # type: ignore[list-item]

    def text(self, prefix: str = "") -> str:
        return "\n".join(text for where, text in self.texts if where.startswith(prefix))


class CapturedLogs(logging.Handler):
    """Every record that reaches the root logger's handlers, as they would render it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.rendered: list[str] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        text = self.format(record)
        if record.stack_info:
            text += "\n" + record.stack_info
        self.rendered.append(text)

    def loggers(self) -> set[str]:
        return {record.name.split(".")[0] for record in self.records}


def secret_forms(secret: str) -> set[str]:
    """The secret, URL- and JSON-escaped, and base64 at each of the three alignments it
    can have inside a longer base64 text (the parts that do not depend on neighbours)."""
    from urllib.parse import quote, quote_plus

    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    raw = secret.encode("utf-8")
    for offset in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            text = encode(b"\0" * offset + raw).decode("ascii").rstrip("=")
            forms.add(text[4:-3] if offset else text[:-3])
    return {form for form in forms if form}


def fragment_source(secret: str) -> str:
    """The part of a secret whose every FRAGMENT-character piece must stay hidden.

    A JWT's header and claims are base64url JSON that other, public texts share
    (every JWT header; MSAL's client_info holds the same uid and tenant claims): its
    signature is what makes it a credential. Other secrets count whole.
    """
    parts = secret.split(".")
    return parts[2] if len(parts) == 3 and secret.startswith("eyJ") else secret


def assert_no_secret(evidence: Evidence, secrets: dict[str, str]) -> None:
    """No secret in any form (whole), and no FRAGMENT-character piece of one, anywhere."""
    grams: dict[str, str] = {}
    whole: dict[str, str] = {}
    for name, secret in secrets.items():
        for form in secret_forms(secret):
            whole[form] = name
        for form in secret_forms(fragment_source(secret)):
            for start in range(len(form) - FRAGMENT + 1):
                grams[form[start : start + FRAGMENT]] = name
    leaks = []
    for where, text in evidence.texts:
        for form, name in whole.items():
            if form in text:
                leaks.append(f"{name} in {where}: ...{_around(text, text.index(form))}...")
        for start in range(len(text) - FRAGMENT + 1):
            name = grams.get(text[start : start + FRAGMENT], "")
            if name:
                leaks.append(f"{name} in {where}: ...{_around(text, start)}...")
                break
    assert not leaks, "secrets leaked:\n" + "\n".join(leaks[:20])


def _around(text: str, index: int) -> str:
    return text[max(0, index - 60) : index + 80].replace("\n", "\\n")


# -- the stack, the app root and the CLI -------------------------------------------------------


@pytest.fixture
def debug_logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[CapturedLogs]:
    """DEBUG for every logger, through every CLI command (each one reconfigures logging)."""
    capture = CapturedLogs()
    root = logging.getLogger()
    saved_root = (root.level, list(root.handlers))
    saved = {name: logging.getLogger(name).level for name in LOUD}

    def everything() -> None:
        root.setLevel(logging.DEBUG)
        for name in LOUD:
            logging.getLogger(name).setLevel(logging.DEBUG)
        if capture not in root.handlers:
            root.addHandler(capture)

    # The command line's logging set-up ends by quietening the SDK: here it turns
    # everything up instead, more than any flag gives.
    monkeypatch.setattr(cmremediate_cli.console, "quiet_sdk_logs", everything)
    # The function app quietens the Azure SDK whenever it builds its runtime; the
    # operator here turns everything up instead.
    before = shared.app.runtime.process_overrides()
    shared.app.runtime.use_overrides(replace(before, sdk_logs=everything))
    everything()
    yield capture
    shared.app.runtime.use_overrides(before)
    root.setLevel(saved_root[0])
    root.handlers[:] = saved_root[1]
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture
def issued_tokens() -> Iterator[list[str]]:
    """Every access and refresh token Entra ID hands any runtime, read off the wire."""
    issued: list[str] = []

    def grab(response: Any, *args: Any, **kwargs: Any) -> None:
        if response.url.endswith("/oauth2/v2.0/token") and response.ok:
            document = response.json()
            issued.extend(document[k] for k in ("access_token", "refresh_token") if k in document)

    def session(verify: Path) -> requests.Session:
        made = new_session(verify)
        made.hooks["response"].append(grab)
        return made

    # Every runtime built from the environment: the functions' and the CLI's.
    before = shared.app.runtime.process_overrides()
    shared.app.runtime.use_overrides(replace(before, http=session))
    yield issued
    shared.app.runtime.use_overrides(before)


@pytest.fixture
def worker_responses(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Every InvocationResponse the worker library hands the host, by invocation ID:
    the RpcException (message and stack trace) is what the host logs of a failure."""
    responses: dict[str, Any] = {}
    real = azure_functions_runtime.invocation_request

    async def recording(message: Any) -> Any:
        response = await real(message)
        responses[response.invocation_id] = response
        return response

    monkeypatch.setattr(azure_functions_runtime, "invocation_request", recording)
    return responses


@pytest.fixture(autouse=True)
def fast_retries(runtime_overrides: Callable[..., None]) -> None:
    """A target that is down fails after two quick tries instead of minutes of backoff."""
    runtime_overrides(
        http_retry=RetryPolicy(attempts=2, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)
    )


@dataclass
class Pipeline:
    """One deployment's settings as local.settings.json files, and the CLI on them."""

    stack: Any
    app_root: Path
    values: dict[str, str]
    evidence: Evidence
    target: Any
    functions: FunctionApp
    responses: dict[str, Any]
    monkeypatch: pytest.MonkeyPatch

    def settings_file(self, name: str = "good", **overrides: str) -> str:
        path = self.app_root / f"{name}.settings.json"
        values = {**self.values, **overrides}
        path.write_text(json.dumps({"IsEncrypted": False, "Values": values}))
        return str(path)

    def cli(self, *args: str, settings: str | None = None, code: int | None = 0) -> Any:
        argv = [*args, "--settings", settings or self.settings_file()]
        result = runner.invoke(cli.app, argv, catch_exceptions=True)
        where = "cli " + " ".join(args)
        self.evidence.add(f"{where}: output", result.output)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            self.evidence.exception(where, result.exception)
        if code is not None:
            assert result.exit_code == code, (argv, result.output, result.exception)
        return result

    # -- the function app, as the Functions host runs it --

    def configure(self, **overrides: str) -> None:
        """These settings (with ``overrides``) as the function app's app settings; the
        next invocation builds its runtime from them."""
        for name, value in {**self.values, **overrides}.items():
            self.monkeypatch.setenv(name, value)
        shared.app.runtime.reset_runtime()

    def invocation(self, where: str, invocation: Invocation) -> Invocation:
        """Record what the host received: the error, the stack trace, the response."""
        response = self.responses[invocation.invocation_id]
        self.evidence.add(f"{where}: worker response", str(response))
        self.evidence.add(f"{where}: return value", repr(invocation.return_value))
        if not invocation.ok:
            trace = str(response.result.exception.stack_trace)
            assert invocation.error == response.result.exception.message
            self.evidence.add(f"{where}: invocation error", invocation.error)
            self.evidence.add(f"{where}: stack trace", trace)
            self.evidence.stack_traces.append(trace)
        return invocation

    def export(self, where: str) -> Invocation:
        """One tick of the export timer, through the worker."""
        return self.invocation(where, self.functions.export(check=False))

    def deliver(self, where: str, body: str) -> Invocation:
        """One delivery of a queue message to the queue function, through the worker."""
        return self.invocation(where, self.functions.deliver(body, message_id=where, check=False))

    def drain(self, where: str) -> DrainReport:
        """The host's listener on the queue, with this app root's host.json."""
        options = QueueOptions.from_host_json(self.app_root)
        host = self.functions.host
        with QueueTriggerListener(host, "apply_remediation", options=options) as listener:
            report = listener.drain()
        for n, invocation in enumerate(report.invocations):
            self.invocation(f"{where} #{n}", invocation)
        return report

    def health(self, where: str) -> HttpResult:
        """GET /api/health with the function key, through the worker."""
        before = set(self.responses)
        result = self.functions.health()
        for invocation_id in set(self.responses) - before:
            self.evidence.add(f"{where}: worker response", str(self.responses[invocation_id]))
        self.evidence.add(f"{where}: {result.status}", result.body.decode("utf-8", "replace"))
        self.evidence.add(f"{where}: headers", repr(result.headers))
        return result

    def status_messages(self, *pairs: tuple[str, str]) -> None:
        now = datetime.now(UTC).replace(tzinfo=None)
        self.stack.site_db.insert_status_messages(
            [
                GeneratedStatusMessage(
                    site_code="PS1",
                    machine_name=name,
                    time_utc=now - timedelta(minutes=30 - n),
                    insertion_strings=("MsgType_Office365Upgrade", value),
                )
                for n, (name, value) in enumerate(pairs)
            ]
        )

    def snapshot_storage(self, when: str) -> int:
        """Queue and poison bodies (raw and decoded), state blobs and audit entities."""
        connection = self.values["AzureWebJobsStorage"]
        queue_name = self.values["REMEDIATION_QUEUE"]
        seen = 0
        for name in (queue_name, f"{queue_name}-poison"):
            with QueueClient.from_connection_string(connection, name) as queue:
                try:
                    messages = list(queue.peek_messages(max_messages=32))
                except ResourceNotFoundError:
                    continue
            for message in messages:
                seen += 1
                self.evidence.add(f"{when}: {name} raw", message.content)
                self.evidence.add(
                    f"{when}: {name} decoded",
                    base64.b64decode(message.content).decode("utf-8", "replace"),
                )
        blobs = BlobServiceClient.from_connection_string(connection)
        container = blobs.get_container_client(f"{queue_name}-state")
        try:
            for blob in container.list_blobs():
                seen += 1
                data = container.download_blob(blob.name).readall()
                self.evidence.add(f"{when}: blob {blob.name}", data.decode("utf-8", "replace"))
        except ResourceNotFoundError:
            pass
        with TableClient.from_connection_string(connection, audit_table_name(queue_name)) as table:
            try:
                for entity in table.list_entities():
                    seen += 1
                    self.evidence.add(f"{when}: audit entity", repr(dict(entity)))
                    self.evidence.add(f"{when}: audit metadata", repr(entity.metadata))
            except ResourceNotFoundError:
                pass
        return seen


TARGETS = ("adminservice", "configmgr-webservice", "rest")


@pytest.fixture(params=TARGETS)
def pipeline(
    request: pytest.FixtureRequest,
    stack: Any,
    entra: Any,
    adminservice: Any,
    local_ca: Any,
    tmp_path: Path,
    app: FunctionApp,
    worker_responses: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> Pipeline:
    kind = request.param
    host = json.loads((REPO / "host.json").read_text())
    host["extensions"]["queues"].update(visibilityTimeout="00:00:01", maxDequeueCount=2)
    (tmp_path / "host.json").write_text(json.dumps(host))
    values = {
        **stack.settings_values(),
        "AzureWebJobsScriptRoot": str(tmp_path),
        "ADMINSERVICE_URL": adminservice.cmg_url,
        "ENTRA_AUTHORITY_HOST": entra.authority_host,
        "ENTRA_TENANT_ID": entra.tenant_id,
        "ENTRA_CLIENT_ID": CLIENT_ID,
        "ENTRA_CLIENT_SECRET": CLIENT_SECRET,
        "ADMINSERVICE_USERNAME": scenario.SERVICE_ACCOUNT,
        "ADMINSERVICE_PASSWORD": SERVICE_PASSWORD,
        "WEBSERVICE_SECRET": SOAP_SECRET,
        "TLS_CA_BUNDLE": str(local_ca.bundle_path),
        "REMEDIATION_RULES_FILE": str(FIXTURES.parent / "remediation-rules.json"),
        "RESOLVE_RETRY_DELAY_SECONDS": "1",
        "EXPORT_SCHEDULE": "0 */5 * * * *",
    }
    target = adminservice
    if kind != "adminservice":
        target = request.getfixturevalue("soap" if kind == "configmgr-webservice" else "rest")
        values.update(
            REMEDIATION_RULES_FILE=webservice_rules(tmp_path),
            WEBSERVICE_KIND=kind,
            WEBSERVICE_URL=target.url,
        )
        if kind == "rest":
            values["WEBSERVICE_SCOPE"] = f"{REST_API}/.default"
    stack.site_db.insert_devices(scenario.DEVICES)
    return Pipeline(stack, tmp_path, values, Evidence(), target, app, worker_responses, monkeypatch)


def sql_password(connection_string: str) -> str:
    (password,) = [a.value for a in parse_odbc(connection_string) if a.key == "pwd"]
    return password


def with_sql_password(connection_string: str, password: str) -> str:
    braced = "{" + password.replace("}", "}}") + "}"
    return ";".join(
        f"Pwd={braced}" if part.lower().startswith("pwd=") else part
        for part in connection_string.split(";")
    )


def test_no_secret_leaves_the_pipeline(
    pipeline: Pipeline,
    debug_logs: CapturedLogs,
    issued_tokens: list[str],
    request: pytest.FixtureRequest,
) -> None:
    p, ev = pipeline, pipeline.evidence
    kind = p.values.get("WEBSERVICE_KIND", "adminservice")
    started = time.monotonic()

    # -- the happy path: check, export, process, and what the operator reads --
    p.status_messages(
        ("PC-ADD01", "projectInstalled"),
        ("PC-REIMAGED01", "visioInstalled"),
        ("PC-AMBIG01", "projectInstalled"),
        ("PC-MEMBER01", "projectInstalled"),
    )
    p.cli("check", "--json")
    p.cli("check")
    dry = p.cli("export", "--dry-run", "--json")
    assert json.loads(dry.stdout)["enqueued"] == 0 and len(json.loads(dry.stdout)["requests"]) == 4
    p.cli("export", "--dry-run")
    p.configure()
    assert p.export("export").ok
    assert p.snapshot_storage("after export") >= 5  # 4 messages and a watermark
    processed = p.drain("process")
    assert processed.succeeded == 4 and processed.failed == 0, processed
    assert p.health("health").status == 200
    for command in (("status", "--json"), ("status",), ("outcomes", "--json"), ("outcomes",)):
        p.cli(*command)

    # -- the target is down: retried, poisoned, shown, requeued --
    p.status_messages(("PC-ADD01", "visioInstalled"))
    assert p.export("export, one more").ok
    p.target.set_down(True)
    try:
        retried = p.drain("process, target down")
        assert (retried.failed, retried.poisoned) == (1, 0), retried
        time.sleep(1.2)  # the visibility timeout of this app root's host.json
        # The last attempt fails: the function parks the message in the poison queue.
        parked = p.drain("process, target still down")
        assert (parked.failed, parked.succeeded, parked.poisoned) == (0, 1, 0), parked
        p.health("health, target down")
    finally:
        p.target.set_down(False)
    assert p.snapshot_storage("after poisoning") >= 1
    (poisoned,) = json.loads(p.cli("poison", "list", "--json").stdout)
    p.cli("poison", "list")
    p.cli("poison", "show", poisoned["id"])
    p.cli("poison", "requeue", "--all")
    assert p.drain("process, requeued").succeeded == 1

    # -- wrong credentials: refused by Entra ID or by the web service --
    wrong = {
        "adminservice": {"ADMINSERVICE_PASSWORD": WRONG_SERVICE_PASSWORD},
        "configmgr-webservice": {"WEBSERVICE_SECRET": WRONG_SOAP_SECRET},
        "rest": {"ENTRA_CLIENT_SECRET": WRONG_CLIENT_SECRET},
    }[kind]
    refused = p.settings_file("wrong-credential", **wrong)
    p.status_messages(("PC-REMOVE01", "projectInstalled"))
    assert p.export("export, before the wrong credential").ok
    p.cli("check", "--json", settings=refused, code=None)
    p.configure(**wrong)
    after = p.drain("process, wrong credential")
    if kind == "configmgr-webservice":
        # AddCMComputerToCollection answered false: decided, and recorded as refused.
        assert after.succeeded == 1, after
        (outcome,) = shared.app.runtime.get_runtime().audit.query(machine_name="PC-REMOVE01")
        assert outcome.kind == "target-refused", outcome
    else:
        assert after.failed == 1, after  # the token was refused: left for a retry
    p.health("health, wrong credential")
    if kind == "adminservice":
        failed = json.loads(p.cli("check", "--json", settings=refused, code=1).stdout)
        assert any(c["name"] == "token" and "AADSTS50126" in c["detail"] for c in failed)

    # -- a wrong SQL password: login refused --
    connection = p.values["SITE_DB_CONNECTION"]
    wrong_sql = with_sql_password(connection, WRONG_SQL_PASSWORD)
    p.configure(SITE_DB_CONNECTION=wrong_sql)
    with pytest.raises(InvocationFailed, match=r"^SiteDatabaseRefused: ") as refused_login:
        checked(p.export("export, wrong SQL password"))
    assert "SITE_DB_CONNECTION was refused" in str(refused_login.value)
    ev.exception("export, wrong SQL password", refused_login.value)
    assert p.health("health, wrong SQL password").status == 503
    bad_sql = p.settings_file("wrong-sql", SITE_DB_CONNECTION=wrong_sql)
    failed_export = p.cli("export", settings=bad_sql, code=1)
    assert "SITE_DB_CONNECTION was refused" in str(failed_export.exception)
    p.cli("check", "--json", settings=bad_sql, code=1)
    status = json.loads(p.cli("status", "--json", settings=bad_sql).stdout)
    assert status["errors"] and "refused" in status["errors"][0]
    p.cli("status", settings=bad_sql, code=1)

    # -- settings errors name the setting, not its value --
    broken_values = {
        "SITE_DB_CONNECTION": connection.replace("SSLmode=verify-full", "SSLmode=require"),
        "ADMINSERVICE_URL": p.values["ADMINSERVICE_URL"].replace("https://", "http://"),
    }
    named = (
        "SITE_DB_CONNECTION: SSLmode=require does not check the server certificate",
        "ADMINSERVICE_URL: must be an https:// URL",
    )
    p.configure(**broken_values)
    with pytest.raises(InvocationFailed, match=r"^ConfigurationError: ") as timer_refused:
        checked(p.export("export, broken settings"))
    with pytest.raises(InvocationFailed, match=r"^ConfigurationError: ") as queue_refused:
        checked(p.deliver("deliver, broken settings", body_of(fixture("01-add"))))
    for caught in (timer_refused, queue_refused):
        assert all(problem in str(caught.value) for problem in named), str(caught.value)
        ev.exception("invocation, broken settings", caught.value)
    assert p.health("health, broken settings").status == 503
    broken = p.settings_file("broken", **broken_values)
    invalid = p.cli("check", settings=broken, code=1)
    message = str(invalid.exception)
    assert isinstance(invalid.exception, ConfigurationError)
    assert all(problem in message for problem in named), message
    with pytest.raises(ConfigurationError) as caught_settings:
        load_settings(json.loads(Path(broken).read_text())["Values"])
    ev.exception("load_settings", caught_settings.value)
    p.configure()

    # -- settings as a program or a debugger would dump them; the reference document --
    settings = load_settings(p.values)
    for label, dump in (
        ("repr", repr(settings)),
        ("str", str(settings)),
        ("model_dump", repr(settings.model_dump())),
        ("model_dump json", json.dumps(settings.model_dump(mode="json"))),
        ("model_dump_json", settings.model_dump_json()),
    ):
        ev.add(f"settings {label}", dump)
    reference = runner.invoke(cli.app, ["config-reference"])
    assert "SITE_DB_CONNECTION" in reference.output
    ev.add("config-reference", reference.output)

    assert p.snapshot_storage("at the end") >= 6  # 5 outcomes or more, a watermark
    for record_text in debug_logs.rendered:
        ev.add("log", record_text)

    # -- everything above was really observed --
    logs = ev.text("log")
    assert len(debug_logs.records) > 100
    assert {"azure", "urllib3", "shared"} <= debug_logs.loggers(), debug_logs.loggers()
    assert any(
        r.levelno == logging.DEBUG and r.name.startswith("azure") for r in debug_logs.records
    )
    assert "Starting new HTTPS connection" in logs or kind == "configmgr-webservice"
    assert "not decided, the message will be retried" in logs
    outcomes = ev.text("at the end: audit entity")
    assert "PC-ADD01" in outcomes and "PC-AMBIG01" in outcomes
    assert ev.text("cli check --json: output").count('"ok": true') >= 3
    assert ev.exceptions >= 4
    # Failed invocations, each with the stack trace the host logs: target down once (the
    # last attempt is parked, not failed), the wrong credential (not for SOAP: decided),
    # the SQL login, the settings twice.
    assert len(ev.stack_traces) >= (4 if kind == "configmgr-webservice" else 5), ev.stack_traces
    assert all(t.startswith("Traceback (most recent call last)") for t in ev.stack_traces)
    if kind != "configmgr-webservice":
        assert issued_tokens, "the pipeline must have been issued tokens"
        assert "requesting a new token" in logs or kind == "rest"

    site_password = sql_password(connection)
    secrets = {
        "the SQL password": site_password,
        "a wrong SQL password": WRONG_SQL_PASSWORD,
        "ADMINSERVICE_PASSWORD": SERVICE_PASSWORD,
        "a wrong ADMINSERVICE_PASSWORD": WRONG_SERVICE_PASSWORD,
        "ENTRA_CLIENT_SECRET": CLIENT_SECRET,
        "a wrong ENTRA_CLIENT_SECRET": WRONG_CLIENT_SECRET,
        "WEBSERVICE_SECRET": SOAP_SECRET,
        "a wrong WEBSERVICE_SECRET": WRONG_SOAP_SECRET,
        "the storage account key": STORAGE_KEY,
        **{f"token {n}": token for n, token in enumerate(issued_tokens)},
    }
    assert_no_secret(ev, secrets)
    request.node.add_report_section("call", "security", f"{time.monotonic() - started:.1f}s")


def test_the_leak_check_finds_what_it_looks_for() -> None:
    """The checker itself: a secret in any form, or a fragment of one, is found."""
    secret = "Sup3r-S3cret-Value/with+chars"
    cases: list[tuple[str, Callable[[str], str]]] = [
        ("as is", lambda s: f"password={s}"),
        ("fragment", lambda s: f"...{s[3 : 3 + FRAGMENT]}..."),
        ("url", lambda s: "p=" + __import__("urllib.parse").parse.quote(s, safe="")),
        ("base64", lambda s: base64.b64encode(f"user:{s}".encode()).decode()),
        ("json", lambda s: json.dumps({"p": s + '"'})),
    ]
    for label, render in cases:
        evidence = Evidence()
        evidence.add(label, render(secret))
        with pytest.raises(AssertionError, match="secrets leaked"):
            assert_no_secret(evidence, {"the secret": secret})
    clean = Evidence()
    clean.add("clean", "nothing to see; Sup3r-S3cret (too short to be a fragment)")
    assert_no_secret(clean, {"the secret": secret})
