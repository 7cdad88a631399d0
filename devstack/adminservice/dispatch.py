"""One request through the simulator: its route, the injected faults, the bearer token,
then the metadata document, a query or an action; every request is logged."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable
from email.message import Message
from urllib.parse import unquote, urlsplit

from devstack.adminservice.actions import Actions
from devstack.adminservice.auth import BearerAuth
from devstack.adminservice.calls import CallLog, _CallInfo
from devstack.adminservice.entities import _METADATA
from devstack.adminservice.faults import FaultPlan
from devstack.adminservice.odata import _XML_TYPE, ODataError, _Answer, _query_options
from devstack.adminservice.queries import Queries
from devstack.adminservice.routes import _match_base, _Route, _route

log = logging.getLogger(__name__)


class Dispatcher:
    """Answers the requests the HTTPS server reads."""

    def __init__(
        self,
        *,
        origin: Callable[[], str],
        prefixes: tuple[str, ...],
        faults: FaultPlan,
        auth: BearerAuth,
        queries: Queries,
        actions: Actions,
        calls: CallLog,
    ) -> None:
        self._origin = origin
        self._prefixes = prefixes
        self._faults = faults
        self._auth = auth
        self._queries = queries
        self._actions = actions
        self._calls = calls

    def refused(self, method: str, path: str, answer: _Answer) -> None:
        """Log a request the server refused before it could be served."""
        self._calls.record(_CallInfo(method, path), answer.status, _sent_bytes(method, answer))

    def serve(self, method: str, target: str, headers: Message, body: bytes) -> _Answer | None:
        """Answer one request; None means: reset the connection."""
        info = _CallInfo(method=method, path=target)
        answer: _Answer | None
        with self._calls.serving():
            try:
                answer = self._serve_checked(method, target, headers, body, info)
            except ODataError as error:
                answer = error.answer()
            except Exception:  # a simulator bug: answer like a failing server, keep it
                log.exception("AdminService simulator failed on %s %s", method, target)
                self._calls.record_bug(traceback.format_exc())
                answer = ODataError(500, "An error has occurred (simulator bug).").answer()
            self._calls.record(
                info,
                0 if answer is None else answer.status,
                _sent_bytes(method, answer),
            )
        return answer

    def _serve_checked(
        self, method: str, target: str, headers: Message, body: bytes, info: _CallInfo
    ) -> _Answer | None:
        split = urlsplit(target)
        try:
            path = unquote(split.path, errors="strict")
        except UnicodeDecodeError:
            raise ODataError(400, "The request URL is not valid UTF-8.") from None
        info.path = path
        base, rest = _match_base(path, self._prefixes)
        route = _route(rest)
        if isinstance(route, _Route):
            info.route = route.name
            if route.collection_key is not None:
                info.collection_id = route.collection_key.upper()
        route_name = info.route or ""

        if self._faults.take_reset(route_name):
            return None
        self._faults.delay(route_name)
        fault = self._faults.take_fault(route_name)
        if fault is not None:
            return fault

        info.upn = self._auth.authenticate(headers).upn
        if isinstance(route, ODataError):
            raise route
        if method not in route.methods:
            raise ODataError(
                405,
                f"The requested resource does not support http method '{method}'.",
                headers=(("Allow", ", ".join(route.methods)),),
            )
        options = _query_options(split.query)
        context = f"{self._origin()}{base}wmi/$metadata"
        if route.name == "metadata":
            if options.keys() - {"$format"}:
                raise ODataError(400, "The $metadata document takes no query options.")
            return _Answer(200, _METADATA, _XML_TYPE, (("OData-Version", "4.0"),))
        if route.action is not None:
            return self._actions.run(route, headers, body, info, context, options)
        assert route.entity_set is not None
        if route.collection_key is not None:
            return self._queries.by_key(route.entity_set, route.collection_key, options, context)
        return self._queries.entity_set(route.entity_set, options, context, info)


def _sent_bytes(method: str, answer: _Answer | None) -> int:
    """The length of the body the server writes (none for a reset or a HEAD)."""
    return 0 if answer is None or method == "HEAD" else len(answer.body)
