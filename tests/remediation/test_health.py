"""The ``health`` HTTP function: figures and checks; 503 when a dependency is down."""

from __future__ import annotations

import pytest
from azure.storage.queue import QueueClient

pytestmark = pytest.mark.stack


def call_health(remediation):
    """``GET /api/health`` with the function key, through the worker."""
    return remediation.app.health()


def test_healthy_stack_answers_200_with_the_figures(remediation):
    response = call_health(remediation)
    assert response.status == 200
    body = response.json()
    assert body["status"] == "healthy"
    names = {c["name"]: c["ok"] for c in body["checks"]}
    assert names["site database"] and names["AdminService"] and names["token"]
    assert body["figures"]["queue_depth"] == 0
    assert body["attention"] == []


def test_poison_and_held_adds_need_attention_but_stay_200(remediation):
    from shared.domain.requests import RemediationRequest
    from tests.remediation.conftest import fixture

    runtime = remediation.runtime
    poison = QueueClient.from_connection_string(
        remediation.stack.azurite.connection_string, runtime.settings.poison_queue
    )
    with poison:
        poison.create_queue()
        poison.send_message("bm90IGEgcmVxdWVzdA==")
    request = RemediationRequest.model_validate(fixture("01-add")["body"])
    runtime.audit.record(request, "held-rate-limit", "test hold")

    response = call_health(remediation)
    assert response.status == 200  # every dependency is up
    notes = response.json()["attention"]
    assert len(notes) == 2
    assert "1 message(s) in the poison queue" in notes[0]
    assert "1 add(s) to PS100123 held" in notes[1]


def test_a_dependency_down_answers_503_naming_it(one_http_attempt, remediation):
    remediation.adminservice.set_down(True)
    try:
        response = call_health(remediation)
    finally:
        remediation.adminservice.set_down(False)
    assert response.status == 503
    body = response.json()
    failed = [c for c in body["checks"] if not c["ok"]]
    assert failed and failed[0]["name"] == "AdminService"
    assert "ADMINSERVICE_URL" in failed[0]["hint"]
    assert all("Bearer" not in c["detail"] for c in body["checks"])


@pytest.mark.parametrize("remediation", [{"EXPORT_SOURCE": "adminservice"}], indirect=True)
def test_the_adminservice_export_is_checked_through_the_adminservice_not_sql(
    one_http_attempt, remediation, monkeypatch, no_odbc
):
    from tests.remediation.conftest import install_fixed_clock_runtime

    monkeypatch.delenv("SITE_DB_CONNECTION")
    remediation.runtime = install_fixed_clock_runtime()
    response = call_health(remediation)
    assert response.status == 200
    checks = {c["name"]: c for c in response.json()["checks"]}
    assert "site database" not in checks  # nothing reads SQL, so nothing checks it
    assert checks["status messages"]["ok"]
    assert "SMS_Site" in checks["status messages"]["detail"]

    # the site list is read twice: by the check, and for the figures beside it
    remediation.adminservice.fail_next(2, 503, route="SMS_Site")
    response = call_health(remediation)
    assert response.status == 503
    body = response.json()
    failed = [c for c in body["checks"] if not c["ok"]]
    assert [c["name"] for c in failed] == ["status messages"]
    assert "may read status messages" in failed[0]["hint"]
    assert [e.split(":")[0] for e in body["figures"]["errors"]] == [
        "status messages (AdminService)"
    ]
