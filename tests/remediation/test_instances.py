"""Two instances of the app drain one queue whose devices sent their facts several times,
against an AdminService that keeps duplicate rules: every device is added exactly once.

Each instance is a process of its own (``python -m devstack.instance``): Microsoft's
worker library indexes the app, and the host's queue listener feeds it through the
worker's thread pool, so the only thing the instances share is what instances on Azure
share: the storage account and the services."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from devstack.adminservice import AdminServiceSimulator
from devstack.datagen import GeneratedStatusMessage
from devstack.entra import EntraSimulator
from devstack.tls import LocalCA
from tests.conftest import REPO, FunctionApp, Stack
from tests.helpers import device
from tests.remediation import scenario

pytestmark = pytest.mark.stack

PROJECT, VISIO = "PS100123", "PS100124"
#: Every device reports the Project fact three times; every other one Visio twice too.
DEVICES = [device(16_800_000 + n, f"WAVE{n:03}") for n in range(40)]


def messages() -> list[GeneratedStatusMessage]:
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(minutes=30)
    sent = []
    for n, record in enumerate(DEVICES):
        facts = ["projectInstalled"] * 3 + (["visioInstalled"] * 2 if n % 2 == 0 else [])
        for k, fact in enumerate(facts):
            sent.append(
                GeneratedStatusMessage(
                    site_code="PS1",
                    machine_name=record.name,
                    time_utc=start + timedelta(seconds=n * 7 + k),
                    insertion_strings=("MsgType_Office365Upgrade", fact),
                )
            )
    return sent


@pytest.fixture
def keeping_duplicates(local_ca: LocalCA, entra: EntraSimulator, stack: Stack):
    """An AdminService that keeps a second identical direct rule if asked to add one."""
    with AdminServiceSimulator(
        local_ca,
        jwks_uri=entra.jwks_uri,
        issuer=entra.issuer_v1,
        admins=[scenario.SERVICE_ACCOUNT],
        devices=DEVICES,
        collections=scenario.COLLECTIONS,
        duplicate_add="keep",
        site_database=stack.site_db,
    ) as simulator:
        # Adds take a while, as through a CMG: two deliveries of one device overlap.
        simulator.set_latency(0.05)
        yield simulator


def test_two_instances_add_every_device_exactly_once(
    stack: Stack,
    entra: EntraSimulator,
    local_ca: LocalCA,
    keeping_duplicates: AdminServiceSimulator,
    functions_host,
    monkeypatch: pytest.MonkeyPatch,
):
    stack.site_db.insert_devices(DEVICES)
    settings = stack.settings_values(
        ADMINSERVICE_URL=keeping_duplicates.cmg_url,
        ENTRA_AUTHORITY_HOST=entra.authority_host,
        ENTRA_TENANT_ID=entra.tenant_id,
        ENTRA_CLIENT_ID=scenario.CLIENT_ID,
        ADMINSERVICE_USERNAME=scenario.SERVICE_ACCOUNT,
        ADMINSERVICE_PASSWORD=scenario.SERVICE_PASSWORD,
        TLS_CA_BUNDLE=str(local_ca.bundle_path),
        REMEDIATION_RULES_FILE="rules.json",
        RESOLVE_RETRY_DELAY_SECONDS="1",
        MAX_ADDS_PER_COLLECTION_PER_HOUR="1000",
        EXPORT_SCHEDULE="0 */5 * * * *",
        AzureWebJobsScriptRoot=str(REPO),
    )
    environment = {**os.environ, **settings}
    instances = [
        subprocess.Popen(
            [sys.executable, "-m", "devstack.instance", "--wait-for-messages", "--timeout", "240"],
            cwd=REPO,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for name, value in settings.items():
            monkeypatch.setenv(name, value)
        sent = messages()
        stack.site_db.insert_status_messages(sent)
        FunctionApp(functions_host).export()  # both instances start on the full queue
        finished = [instance.communicate(timeout=300) for instance in instances]
    finally:
        for instance in instances:
            instance.kill()
    reports = []
    for (out, err), instance in zip(finished, instances, strict=True):
        assert instance.returncode == 0, err[-3000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))

    # both instances worked on the queue, side by side
    assert all(r["succeeded"] > 0 for r in reports), reports
    assert sum(r["poisoned"] for r in reports) == 0
    expected = {PROJECT: {d.resource_id for d in DEVICES}} | {
        VISIO: {d.resource_id for n, d in enumerate(DEVICES) if n % 2 == 0}
    }
    for collection_id, members in expected.items():
        # one direct rule per device: a second add would have left a second rule
        assert keeping_duplicates.direct_rule_counts(collection_id) == Counter(
            dict.fromkeys(members, 1)
        ), collection_id
    adds = keeping_duplicates.successful_adds()
    assert sum(adds.values()) == sum(len(m) for m in expected.values())
    # every (status message, rule) ended in exactly one outcome
    added = sum(len(m) for m in expected.values())
    kinds = Counter(o.kind for o in stack.runtime().audit.query())
    assert kinds == {"added": added, "already-member": len(sent) - added}
