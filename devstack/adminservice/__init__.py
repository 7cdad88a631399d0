"""A local stand-in for the ConfigMgr AdminService (OData v4 over HTTPS, Entra ID tokens).

Built from the documented API shapes (``/work/shared/reference/configmgr.md`` §3-4) and
strict where the real service is strict: every call needs a delegated RS256 bearer token
of a ConfigMgr administrative user, checked against a JWKS fetched over HTTPS; ``$filter``
is parsed by a real (small) OData grammar, so a badly escaped literal fails or matches
nothing instead of matching everything; action bodies are validated like OData does.

Typical use::

    with AdminServiceSimulator(ca, jwks_uri=entra.jwks_uri, issuer=entra.issuer,
                               admins=["svc-cm@contoso.com"], devices=workload.devices,
                               collections={"PS100123": "Project reinstall"}) as admin:
        client = AdminServiceClient(admin.cmg_url, ...)

Answers this simulator chose where the real service is unverified (each one switchable
where it matters, so tests can run both answers):

- Re-adding an existing direct rule: ``duplicate_add="error"`` answers **500**
  ``{"error": {"code": "InternalServerError", "message": "... already exists ...
  (0x80041019) ..."}}`` and adds nothing; ``"ok"`` answers 201 ``ReturnValue`` 0 and adds
  nothing; ``"keep"`` (the worst case) answers 201 ``ReturnValue`` 0 and keeps a second
  identical rule, which ``CollectionRules`` then lists twice (``direct_rule_counts``
  counts them; membership stays one row).
- DeleteMembershipRule deletes **every** direct rule of that ResourceID (kept
  duplicates too), so one delete always takes the resource out.
- Deleting a rule that does not exist: ``delete_missing="error"`` answers **500** with a
  WMI "Not found (0x80041002)" message; ``"ok"`` answers 201 ``ReturnValue`` 0.
- Other WMI method failures (ResourceID that is no SMS_R_System record, a class name
  other than SMS_R_System, a built-in ``SMS*`` collection) are 500 with a WBEM code in
  the message; malformed bodies are 400 (the OData layer); an unknown collection is 404.
- App-only tokens (``roles``, no ``scp``) and delegated tokens without the
  ``user_impersonation`` scope: **403** with ``WWW-Authenticate: Bearer
  error="insufficient_scope"`` (RFC 6750 §3.1; no retry with a new token helps), or 401
  ``invalid_token`` with ``app_only_status=401``.
- The key GET ``wmi/SMS_Collection('ID')`` answers ``{"value": [entity]}`` as community
  code reads it (``key_get_shape="value"``) or the bare entity (``"entity"``); an unknown
  key is 404 (``missing_key="404"``) or an empty ``value`` list (``"empty"``).
- Every action answers 201 (AddMembershipRule's documented status, used for all).
- What aims at a collection (``devstack.adminservice.targeting``): deployments are
  ``SMS_DeploymentSummary`` rows (``add_deployment``: ``FeatureType`` and
  ``DeploymentIntent`` as given, 1 Required / 2 Available being community practice,
  unverified); maintenance windows are ``SMS_ServiceWindow`` objects in the lazy
  ``ServiceWindows`` of ``SMS_CollectionSettings`` (``add_service_window``), which
  only the key GET ``wmi/SMS_CollectionSettings('ID')`` answers; a collection without
  settings (none until a window or ``add_collection_settings``) is a 404 there, as is
  an unknown one. ``SMS_Collection.ServiceWindowsCount`` counts the windows. A query
  refuses a lazy property in ``$select`` (400, as for any property the type lacks).
- ``set_limiting_collection``: ``LimitToCollectionID``/``LimitToCollectionName`` say
  so, and a resource whose rule is added becomes a member only if it is a member of
  the limiting collection as evaluated then (a change of the limiting collection's
  members does not reach the limited one until it is evaluated again). Otherwise
  every collection but the built-in ones is limited to ``SMS00001`` "All Systems",
  which limits nothing (it need not be a simulated collection).
- ``SMS_Collection`` without ``$select`` answers its first five properties
  (``CollectionID``, ``Name``, ``MemberCount``, ``CollectionType``,
  ``LimitToCollectionID``; the key GET adds ``CollectionRules``); the real service
  answers every non-lazy one. ``$select`` reaches the others.
- The status message classes (``SMS_StatusMessage``, ``SMS_StatMsgWithInsStrings``,
  ``SMS_StatMsgInsStrings``) and ``SMS_Site`` come from the site database stand-in,
  committed rows only (``status_messages=StatusMessageReader...``; without it, an empty
  ``value``). ``ResourceID`` is always null unless a test sets it per RecordID
  (``set_status_message_resource_id``). ``Time`` carries the fraction of a second when
  there is one (``2026-11-20T08:01:00.12Z``). ``SMS_Site`` lists one active primary site
  per site code of a message or registered in the database, with constant other values.
  A failing site database is a 500 ``Generic failure (0x80041001)``.
- ``SMS_FullCollectionMembership`` shows the evaluated membership (``IsDirect`` as
  evaluated: true, as every rule is direct). With ``site_database=`` the same
  evaluation is written to the stand-in's ``v_FullCollectionMembership`` before the
  answer goes out: a whole collection on ``set_direct_members`` and RequestRefresh,
  one row for an add or delete that evaluates at once, nothing until RequestRefresh
  with ``membership_needs_refresh=True``. A failing write is a 500 ``Generic failure
  (0x80041001)`` and changes nothing.
- ``$filter`` takes any number of terms (a parenthesised chain of 100 ``or`` terms is
  fine). ASP.NET OData refuses trees of more than 100 nodes by default
  (``MaxNodeCount``; a ``ResourceID eq N`` term is about 6 nodes): whether the
  AdminService keeps that default is unverified, so ``max_filter_nodes=100`` answers
  400 "The node count limit of '100' has been exceeded." (off by default).
- ``gt``, ``ge``, ``lt``, ``le`` and ``ne`` apply to numbers and dates only; strings and
  booleans take ``eq`` (400 otherwise). Date literals are unquoted ISO 8601 with ``Z`` or
  an offset; a fraction past microseconds is cut.
- ``$orderby`` sorts nulls first (ascending), as SQL Server does, and breaks ties by the
  key, ascending; without it, answers are in key order. Ordering by a string property
  is a 400: the simulator cannot reproduce the SQL collation's order. ``$skip`` is
  served. No answer is ever paged by the server (no ``@odata.nextLink``).

Also decided here: all three base URLs take bearer tokens (the real ``/AdminService/``
uses Windows authentication); membership follows the direct rules at once, or only after
``RequestRefresh`` with ``membership_needs_refresh=True``; string comparisons in
``$filter`` are case-insensitive like WQL; property names are case-sensitive.

Fault injection (``fail_next``, ``storm``, ``reset_connections_next``, latency) acts in
front of authentication, as a throttling gateway (the CMG) would. ``slow_next`` delays
the next answers only and then carries the request out, so a client that gave up
waiting still changed something (an add can land after the client's timeout).

The modules, from the wire inwards:

- ``server``: the HTTPS server and its handler (TLS off the accept loop);
- ``dispatch``: one request through route, faults, token, then query or action;
- ``routes``: the base paths and which route a path is for;
- ``faults``: failures, resets, latency and slow answers, in front of authentication;
- ``auth``: the bearer token checked against the issuer's JWKS;
- ``queries`` and ``actions``: the GET answers and the bound actions;
- ``site``: the simulated devices and collections, their membership mirrored into the
  site database stand-in; ``entities``: the schema, its CSDL
  and the entities built from the records; ``targeting``: deployments and
  maintenance windows, and their codes;
- ``odata``: answer and error shapes, query options, action bodies; ``filter``: ``$filter``;
  ``listing``: an entity-set GET's options as one request, answered in memory;
- ``status_messages``: the status message classes and SMS_Site from the site database,
  the selective parts of a query pushed down to SQL;
- ``calls``: the call log (with each answer's size); ``simulator``:
  ``AdminServiceSimulator``, which holds them all;
- ``tokens``: ``TokenSigner`` and ``JwksServer``, for tests and standalone runs;
- ``__main__``: ``python -m devstack.adminservice`` serves the M365 demo devices.
"""

from devstack.adminservice.auth import DEFAULT_AUDIENCE, REQUIRED_SCOPE
from devstack.adminservice.calls import Call, StatusQuery
from devstack.adminservice.filter import parse_filter
from devstack.adminservice.odata import ODataError
from devstack.adminservice.routes import ROUTES
from devstack.adminservice.simulator import DEFAULT_CMG_ID, AdminServiceSimulator
from devstack.adminservice.status_messages import StatusMessageReader
from devstack.adminservice.tokens import JwksServer, TokenSigner

__all__ = [
    "DEFAULT_AUDIENCE",
    "DEFAULT_CMG_ID",
    "REQUIRED_SCOPE",
    "ROUTES",
    "AdminServiceSimulator",
    "Call",
    "JwksServer",
    "ODataError",
    "StatusMessageReader",
    "StatusQuery",
    "TokenSigner",
    "parse_filter",
]
