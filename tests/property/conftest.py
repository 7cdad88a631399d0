"""Property-based tests (hypothesis): the reproducible profile, and a count of the
generated inputs that the terminal summary reports."""

from __future__ import annotations

import functools
import os
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, settings

from devstack.adminservice import AdminServiceSimulator, JwksServer, TokenSigner
from devstack.datagen import GeneratedDevice
from devstack.sitedb import SiteDatabase
from devstack.tls import LocalCA
from shared.platform.http import new_session, trust_store
from shared.platform.retry import RetryPolicy
from shared.targets.adminservice import AdminServiceClient
from tests.helpers import device

HERE = Path(__file__).resolve().parent

# Derandomized: CI and every developer run the very same inputs, so a failure is
# reproducible from the test name alone. No example database (nothing written to the
# work tree), no deadline (this machine is shared: timings are noise), and no
# too_slow health check for the same reason. HYPOTHESIS_PROFILE=explore draws fresh
# random inputs on each run, for hunting bugs by hand.
settings.register_profile(
    "cm-remediate",
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("explore", settings.get_profile("cm-remediate"), derandomize=False)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "cm-remediate"))


def with_fixtures(max_examples: int) -> settings:
    """Settings of a property test that uses pytest fixtures (a database, a simulator):
    their state carries over between examples, which each test allows for."""
    return settings(
        max_examples=max_examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )


#: Inputs each property test ran, by test id (every call of the inner test counts).
GENERATED: Counter[str] = Counter()


def _counting(test: Callable[..., Any], key: str) -> Callable[..., Any]:
    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> Any:
        GENERATED[key] += 1
        return test(*args, **kwargs)

    run.counted = True  # type: ignore[attr-defined]
    return run


def track(test: Any, key: str) -> None:
    """Count the inputs of a @given function that a test calls itself."""
    handle = test.hypothesis
    if not getattr(handle.inner_test, "counted", False):
        handle.inner_test = _counting(handle.inner_test, key)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Wrap each property test's inner test (hypothesis allows replacing it) to count."""
    for item in items:
        if not isinstance(item, pytest.Function) or HERE not in Path(item.path).parents:
            continue
        if hasattr(item.obj, "hypothesis"):
            # Parametrized items share one function: count under the test's own id.
            track(item.obj, item.nodeid.split("[")[0])


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """One line with the total, only when property tests ran."""
    total = sum(GENERATED.values())
    if total:
        terminalreporter.write_line(
            f"property tests: {total} generated inputs in {len(GENERATED)} tests"
        )


# -- discovery records with names that break naive SQL, LIKE and OData -------------------

ISSUER = "https://sts.windows.net/00000000-0000-4000-8000-0000000000ee/"
ADMIN = "svc-property@contoso.example"
COLLECTION_ID = "PS100123"

#: Names of the discovery records both identity sources hold. "PC01" twice (a re-imaged
#: machine), wildcard look-alikes of SQL LIKE ("%", "_", "[...]"), quotes and URL
#: delimiters, an accented name and its unaccented twin, a trailing space.
DEVICE_NAMES = (
    "PC01", "PC01", "pc02", "PC1", "PC_1", "PC%", "PC[1]", "[PC]01", "PC01 ",
    "O'BRIEN-PC", "O''BRIEN-PC", "A&B", "X#Y", "P+Q", "S/T", "Q?R", "E=MC2",
    "ÑANDÚ-PC", "NANDU-PC", "DROP TABLE", "'; --",
)  # fmt: skip
FIRST_RESOURCE_ID = 16_800_000


def device_records() -> list[GeneratedDevice]:
    """One active client record per entry of DEVICE_NAMES."""
    return [
        device(
            FIRST_RESOURCE_ID + index,
            name,
            # Records of one name tie on everything: the choice is "ambiguous".
            creation_date=datetime(2026, 1, 1, 8, DEVICE_NAMES.index(name)),
        )
        for index, name in enumerate(DEVICE_NAMES)
    ]


class StaticTokens:
    """A delegated token of the administrative user, signed by the test's own key."""

    def __init__(self, signer: TokenSigner) -> None:
        self._signer = signer
        self._token: str | None = None

    def token(self, *, fresh: bool = False) -> str:
        if self._token is None or fresh:
            self._token = self._signer.token(issuer=ISSUER, upn=ADMIN, lifetime=4 * 3600)
        return self._token


@pytest.fixture(scope="session")
def token_signer() -> TokenSigner:
    return TokenSigner()


@pytest.fixture(scope="session")
def jwks(local_ca: LocalCA, token_signer: TokenSigner) -> Iterator[JwksServer]:
    with JwksServer(local_ca, [token_signer]) as server:
        yield server


@pytest.fixture
def simulator(
    local_ca: LocalCA, jwks: JwksServer, site_db: SiteDatabase
) -> Iterator[AdminServiceSimulator]:
    """A fresh AdminService holding DEVICE_NAMES and one empty collection, its
    membership mirrored into the site database's v_FullCollectionMembership."""
    with AdminServiceSimulator(
        local_ca,
        jwks_uri=jwks.url,
        issuer=ISSUER,
        admins=[ADMIN],
        devices=device_records(),
        collections={COLLECTION_ID: "Property tests"},
        site_database=site_db,
    ) as service:
        yield service
        assert service.internal_errors == []


@pytest.fixture(scope="session")
def https_session(local_ca: LocalCA) -> Iterator[requests.Session]:
    session = new_session(trust_store(local_ca.bundle_path))
    yield session
    session.close()


@pytest.fixture
def adminservice_client(
    simulator: AdminServiceSimulator, token_signer: TokenSigner, https_session: requests.Session
) -> AdminServiceClient:
    """The real client against the simulator; no retries (a failure shows at once)."""
    return AdminServiceClient(
        simulator.cmg_url,
        StaticTokens(token_signer),
        https_session,
        retry=RetryPolicy(attempts=1),
    )
