"""A Functions host for the tests and the demo, driving Microsoft's Python worker library.

Azure runs ``function_app.py`` through Microsoft's Python worker: the .NET host sends it
``WorkerInitRequest`` (the worker imports the app and validates every function),
``FunctionsMetadataRequest``, a ``FunctionLoadRequest`` per function, then an
``InvocationRequest`` per trigger. This module sends the same protobuf messages to
``azure_functions_runtime`` (the library half of that worker) in this process, so
indexing, binding conversion, the thread pool and exception serialisation are
Microsoft's code, not our reading of the decorators. The trigger data is shaped like
the .NET host's (see ``queue_invocation``, ``timer_invocation``, ``http_invocation``).
What the .NET host itself adds on top (polling, retries, poison queue) lives in
``devstack.queue_host``.

The worker library keeps its function registry in module globals, as the worker
process does: one started host per process (``devstack.worker_index`` indexes in a
fresh one).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Coroutine, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

REPO = Path(__file__).resolve().parents[1]
#: Where bootstrap unpacks the generated FunctionRpc_pb2 modules (a name of our own).
PROTOS_MODULE = "cmr_worker_protos"
#: The function key the host accepts for ``authLevel: function`` routes.
DEFAULT_FUNCTION_KEY = "local-function-key"
#: The modules of the app, imported afresh by every start, as by a new worker process.
APP_MODULES = ("function_app", "triggers")

T = TypeVar("T")
LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class WorkerLibraryMissing(RuntimeError):
    """azure-functions-runtime or the unpacked protobuf modules are not installed."""


class IndexingFailed(RuntimeError):
    """The worker refused the app: on Azure the host logs "0 functions found"."""


class FunctionInError(RuntimeError):
    """The host cannot run this function (a ``%SETTING%`` in its bindings is unset)."""


def load_worker() -> tuple[ModuleType, ModuleType]:
    """Microsoft's worker library and the protobuf module it takes from its caller."""
    try:
        worker = importlib.import_module("azure_functions_runtime")
        protos = importlib.import_module(PROTOS_MODULE)
    except ImportError as error:
        raise WorkerLibraryMissing(
            f"{error}: run scripts/bootstrap.sh (it installs azure-functions-runtime and "
            f"unpacks the worker's protobuf modules as {PROTOS_MODULE})"
        ) from error
    return worker, protos


def _worker_pool() -> Any:
    """The worker library's thread pool for synchronous functions (None before start)."""
    threadpool = importlib.import_module("azure_functions_runtime.utils.threadpool")
    return threadpool.get_threadpool_executor()


@dataclass(frozen=True)
class IndexedFunction:
    """One function as the worker reported it to the host."""

    name: str
    function_id: str
    bindings: tuple[dict[str, Any], ...]

    @property
    def trigger(self) -> dict[str, Any]:
        """The trigger binding (every function has exactly one)."""
        return next(b for b in self.bindings if str(b["type"]).endswith("Trigger"))


@dataclass(frozen=True)
class Invocation:
    """What the host learnt from one invocation."""

    function: str
    invocation_id: str
    ok: bool
    #: ``"<ExceptionType>: <message>"`` of the outermost exception, as the host logs it.
    error: str | None
    #: The traceback the worker sends the host with a failure (it lands in host logs).
    stack_trace: str | None
    return_value: Any
    seconds: float


@dataclass(frozen=True)
class HttpResult:
    """An HTTP trigger's answer, or the host's own (401, 404, 405, 500)."""

    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float = 0.0

    def json(self) -> Any:
        """The body as JSON."""
        return json.loads(self.body)


@dataclass(frozen=True)
class QueueDelivery:
    """A queue message as the queue service returned it to the host."""

    id: str
    pop_receipt: str
    body: str
    dequeue_count: int
    inserted_on: datetime
    expires_on: datetime
    next_visible_on: datetime


def dotnet_time(value: datetime) -> str:
    """A DateTimeOffset as the host serialises it: seven fraction digits, ``+00:00``."""
    value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond:06d}0+00:00"


def resolve_setting_references(value: str, environ: Mapping[str, str]) -> str:
    """``%NAME%`` in a binding, from app settings, as the host resolves it."""
    parts = value.split("%")
    if len(parts) % 2 == 0:
        raise FunctionInError(f"unbalanced %...% in binding value {value!r}")
    for index in range(1, len(parts), 2):
        name = parts[index]
        if not environ.get(name):
            raise FunctionInError(f"'%{name}%' does not resolve to a value (app setting {name})")
        parts[index] = environ[name]
    return "".join(parts)


#: Held while a host runs: the worker library's registry is one per process.
_ONE_HOST_PER_PROCESS = threading.Lock()


class FunctionsHost:
    """The host side of the worker protocol, in this process."""

    def __init__(
        self, script_root: Path = REPO, *, function_key: str = DEFAULT_FUNCTION_KEY
    ) -> None:
        self.script_root = script_root
        self.function_key = function_key
        self.functions: dict[str, IndexedFunction] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._holds_lock = False

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> dict[str, IndexedFunction]:
        """Init (the library indexes here), metadata, load: the host's start-up.

        Raises :class:`IndexingFailed` with the worker's own message when it refuses the
        app."""
        if not _ONE_HOST_PER_PROCESS.acquire(blocking=False):
            raise RuntimeError("a FunctionsHost is already running in this process")
        self._holds_lock = True
        try:
            self._worker, self._protos = load_worker()
            self._loop = asyncio.new_event_loop()
            self._thread = threading.Thread(
                target=self._loop.run_forever, name="functions-host", daemon=True
            )
            self._thread.start()
            self._index()
        except BaseException:
            self.stop()
            raise
        return self.functions

    def _index(self) -> None:
        p = self._protos
        root = str(self.script_root)
        if root not in sys.path:
            sys.path.insert(0, root)
        # A new worker process imports the app afresh.
        for name in list(sys.modules):
            if name.split(".")[0] in APP_MODULES:
                del sys.modules[name]
        init = self._call(
            self._worker.worker_init_request,
            worker_init_request=p.WorkerInitRequest(
                host_version="4.1040.0",
                function_app_directory=root,
                worker_directory=root,
                capabilities={},
            ),
        )
        self._require_success(init.result, "WorkerInitRequest")
        self._worker.start_threadpool_executor()
        metadata = self._call(
            self._worker.functions_metadata_request,
            functions_metadata_request=p.FunctionsMetadataRequest(function_app_directory=root),
        )
        self._require_success(metadata.result, "FunctionsMetadataRequest")
        if not metadata.function_metadata_results:
            raise IndexingFailed("0 functions found (the worker indexed no function)")
        for meta in metadata.function_metadata_results:
            bindings = tuple(json.loads(raw) for raw in meta.raw_bindings)
            loaded = self._call(
                self._worker.function_load_request,
                function_load_request=p.FunctionLoadRequest(
                    function_id=meta.function_id, metadata=meta
                ),
            )
            self._require_success(loaded.result, f"FunctionLoadRequest({meta.name})")
            self.functions[meta.name] = IndexedFunction(meta.name, meta.function_id, bindings)

    def worker_threads(self) -> list[threading.Thread]:
        """The threads of the worker's pool, which run the synchronous functions (for
        the benchmarks' CPU figures; the pool's thread list is its own business)."""
        pool = _worker_pool()
        return list(getattr(pool, "_threads", ())) if pool is not None else []

    def worker_thread_limit(self) -> int | None:
        """The pool's size: PYTHON_THREADPOOL_THREAD_COUNT, else Python's default."""
        pool = _worker_pool()
        return getattr(pool, "_max_workers", None) if pool is not None else None

    def stop(self) -> None:
        """Stop the worker's thread pool and the host's event loop."""
        if self._loop is not None:
            if hasattr(self, "_worker"):
                self._worker.stop_threadpool_executor()
            self._loop.call_soon_threadsafe(self._loop.stop)
            if self._thread is not None:
                self._thread.join(timeout=10)
            self._loop.close()
            self._loop = None
        self.functions.clear()
        if self._holds_lock:
            self._holds_lock = False
            _ONE_HOST_PER_PROCESS.release()

    def __enter__(self) -> FunctionsHost:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the protocol ---------------------------------------------------------------

    def _message(self, **fields: Any) -> SimpleNamespace:
        return SimpleNamespace(
            request=self._protos.StreamingMessage(**fields),
            properties={"protos": self._protos, "host": "127.0.0.1"},
        )

    def _submit(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        if self._loop is None:
            raise RuntimeError("the host is not started")
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    def _call(self, handler: Any, **fields: Any) -> Any:
        return self._submit(handler(self._message(**fields))).result()

    def _require_success(self, result: Any, what: str) -> None:
        if result.status != self._protos.StatusResult.Success:
            raise IndexingFailed(f"{what} failed: {result.exception.message}")

    def function(self, name: str) -> IndexedFunction:
        """An indexed function by name."""
        try:
            return self.functions[name]
        except KeyError:
            raise KeyError(f"no function {name!r}; indexed: {sorted(self.functions)}") from None

    def submit(
        self,
        name: str,
        data: Any,
        trigger_metadata: Mapping[str, Any] | None = None,
    ) -> Future[Invocation]:
        """Start one invocation of ``name`` with its trigger ``data`` (a TypedData).

        Raises :class:`FunctionInError` when a ``%SETTING%`` of its bindings does not
        resolve from the environment: the host never runs such a function."""
        fn = self.function(name)
        for binding in fn.bindings:
            for value in binding.values():
                if isinstance(value, str) and "%" in value:
                    try:
                        resolve_setting_references(value, os.environ)
                    except FunctionInError as error:
                        raise FunctionInError(f"the function {name} is in error: {error}") from None
        p = self._protos
        invocation_id = str(uuid.uuid4())
        request = p.InvocationRequest(
            invocation_id=invocation_id,
            function_id=fn.function_id,
            input_data=[p.ParameterBinding(name=fn.trigger["name"], data=data)],
            trigger_metadata={
                **(trigger_metadata or {}),
                "sys": self.typed_json(
                    {
                        "MethodName": name,
                        "UtcNow": dotnet_time(datetime.now(UTC)),
                        "RandGuid": str(uuid.uuid4()),
                    }
                ),
            },
        )

        async def invoke() -> Invocation:
            started = time.monotonic()
            response = await self._worker.invocation_request(
                self._message(invocation_request=request)
            )
            ok = response.result.status == p.StatusResult.Success
            return Invocation(
                function=name,
                invocation_id=invocation_id,
                ok=ok,
                error=None if ok else response.result.exception.message,
                stack_trace=None if ok else response.result.exception.stack_trace,
                return_value=response.return_value,
                seconds=time.monotonic() - started,
            )

        return self._submit(invoke())

    def typed_json(self, value: Any) -> Any:
        """A TypedData holding ``value`` as JSON."""
        return self._protos.TypedData(json=json.dumps(value))

    def typed_string(self, value: str) -> Any:
        """A TypedData holding a string."""
        return self._protos.TypedData(string=value)

    # -- the triggers ---------------------------------------------------------------

    def timer_invocation(
        self, name: str, *, past_due: bool = False, now: datetime | None = None
    ) -> Future[Invocation]:
        """A timer tick: ``TimerInfo`` JSON, as the host's timer extension sends it."""
        now = now or datetime.now(UTC)
        fn = self.function(name)
        if fn.trigger["type"] != "timerTrigger":
            raise ValueError(f"{name} is not a timer function")
        interval = timedelta(minutes=5)
        info = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {
                "Last": dotnet_time(now - interval),
                "Next": dotnet_time(now + interval),
                "LastUpdated": dotnet_time(now - interval),
            },
            "IsPastDue": past_due,
        }
        return self.submit(
            name,
            self.typed_json(info),
            {"TimerTrigger": self.typed_string(json.dumps(info))},
        )

    def call_timer(self, name: str, *, past_due: bool = False) -> Invocation:
        """Run one timer tick to its end."""
        return self.timer_invocation(name, past_due=past_due).result()

    def queue_invocation(self, name: str, delivery: QueueDelivery) -> Future[Invocation]:
        """A queue message: the decoded body as a string, the trigger metadata as the
        .NET host sends it (JSON object bodies also lend their top-level scalar
        properties, which never override the host's own names)."""
        fn = self.function(name)
        if fn.trigger["type"] != "queueTrigger":
            raise ValueError(f"{name} is not a queue function")
        metadata: dict[str, Any] = {}
        try:
            document = json.loads(delivery.body)
        except (ValueError, RecursionError):
            document = None  # the host's parser gives up too: no properties, same body
        if isinstance(document, dict):
            for prop, value in document.items():
                if isinstance(value, list):
                    continue
                # .NET writes a lone surrogate as U+FFFD when it encodes UTF-8.
                key = LONE_SURROGATE.sub("\ufffd", prop)
                if isinstance(value, str):
                    metadata[key] = self.typed_string(LONE_SURROGATE.sub("\ufffd", value))
                else:
                    metadata[key] = self.typed_json(value)
        metadata.update(
            {
                "QueueTrigger": self.typed_string(delivery.body),
                "Id": self.typed_string(delivery.id),
                "PopReceipt": self.typed_string(delivery.pop_receipt),
                "DequeueCount": self.typed_json(delivery.dequeue_count),
                "InsertionTime": self.typed_json(dotnet_time(delivery.inserted_on)),
                "ExpirationTime": self.typed_json(dotnet_time(delivery.expires_on)),
                "NextVisibleTime": self.typed_json(dotnet_time(delivery.next_visible_on)),
            }
        )
        return self.submit(name, self.typed_string(delivery.body), metadata)

    def call_http(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        timeout: float | None = None,
    ) -> HttpResult:
        """An HTTP request to ``/api/<route>``, routed, key-checked and invoked as the
        host does (``?code=`` or ``x-functions-key`` for ``authLevel: function``)."""
        started = time.monotonic()
        url = urlsplit(path)
        query = dict(parse_qsl(url.query))
        headers = {k.lower(): v for k, v in (headers or {}).items()}
        route = url.path.removeprefix("/api/").strip("/")
        matches = [
            f
            for f in self.functions.values()
            if f.trigger["type"] == "httpTrigger"
            and str(f.trigger.get("route", f.name)).strip("/").lower() == route.lower()
        ]
        if not matches:
            return HttpResult(404, {}, b"", time.monotonic() - started)
        fn = matches[0]
        methods = [m.upper() for m in fn.trigger.get("methods") or []]
        if methods and method.upper() not in methods:
            return HttpResult(405, {}, b"", time.monotonic() - started)
        if str(fn.trigger.get("authLevel", "function")).lower() != "anonymous":
            key = query.get("code") or headers.get("x-functions-key")
            if key != self.function_key:
                return HttpResult(401, {}, b"", time.monotonic() - started)
        p = self._protos
        request = p.RpcHttp(
            method=method.upper(),
            url=f"https://localhost{path}",
            headers=headers,
            query=query,
            body=p.TypedData(bytes=body),
        )
        invocation = self.submit(fn.name, p.TypedData(http=request)).result(timeout=timeout)
        if not invocation.ok:
            return HttpResult(500, {}, b"", invocation.seconds)
        response = invocation.return_value.http
        content = response.body
        payload = content.bytes if content.HasField("bytes") else content.string.encode("utf-8")
        return HttpResult(
            int(response.status_code or 200),
            dict(response.headers),
            payload,
            time.monotonic() - started,
        )
