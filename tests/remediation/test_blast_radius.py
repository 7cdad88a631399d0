"""The blast-radius guard: a flood of (spoofed) status messages cannot push more than
MAX_ADDS_PER_COLLECTION_PER_HOUR devices into a collection; the rest are held, kept,
announced once, and released or discarded by an operator."""

from __future__ import annotations

import json
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from cmremediate_cli.main import app
from shared.domain.requests import RemediationRequest
from tests.remediation import scenario
from tests.remediation.conftest import REPO, Remediation, body_of, fixture

pytestmark = pytest.mark.stack

COLLECTION = "PS100123"
LIMIT = 4
FLOOD = 10


def _flood(remediation: Remediation, count: int, *, first_record: int = 900_000) -> list[dict]:
    """``count`` add requests for distinct, existing devices, all for one collection."""
    bodies = []
    template = fixture("01-add")["body"]
    devices = []
    for n in range(count):
        device = scenario.device(16_800_000 + first_record + n, f"FLOOD{first_record + n:07d}")
        devices.append(device)
        remediation.adminservice.add_device(device)
        bodies.append({**template, "record_id": first_record + n, "machine_name": device.name})
    remediation.stack.site_db.insert_devices(devices)
    return bodies


def _adds(remediation: Remediation) -> Counter[int]:
    return Counter(
        c.resource_id
        for c in remediation.adminservice.calls
        if c.route == "AddMembershipRule" and c.status in (200, 201)
    )


def _deliver_all(remediation: Remediation, bodies: list[dict]) -> None:
    for body in bodies:
        remediation.deliver(json.dumps(body), message_id=f"m-{body['record_id']}")


@pytest.fixture
def guarded(make_remediation) -> Remediation:
    return make_remediation(MAX_ADDS_PER_COLLECTION_PER_HOUR=str(LIMIT))


def _held_ids(bodies: list[dict]) -> list[str]:
    return [f"{b['site_code']}-{b['record_id']}-{b['rule']}" for b in bodies]


def _cli(remediation: Remediation, *args: str):
    settings = remediation.runtime.settings
    assert settings.max_adds_per_collection_per_hour == LIMIT
    return CliRunner().invoke(app, list(args), catch_exceptions=False)


def test_a_flood_adds_no_more_than_the_limit_and_warns_once(guarded, caplog):
    caplog.set_level(logging.INFO)
    bodies = _flood(guarded, FLOOD)

    _deliver_all(guarded, bodies)

    adds = _adds(guarded)
    assert sum(adds.values()) == LIMIT
    assert set(adds.values()) == {1}
    kinds = Counter(guarded.outcome(b).kind for b in bodies)
    assert kinds == {"added": LIMIT, "held-rate-limit": FLOOD - LIMIT}
    alarms = [r for r in caplog.records if "BLAST-RADIUS GUARD" in r.getMessage()]
    assert len(alarms) == 1
    assert alarms[0].levelno == logging.WARNING
    alarm = alarms[0].getMessage()
    assert f"cmremediate held release --collection {COLLECTION}" in alarm
    assert "record=" in alarm and "machine=" in alarm  # the message's fields
    # the other holds are routine lines, not a warning each
    held_warnings = [
        r for r in caplog.records if r.levelno >= logging.WARNING and "held" in r.getMessage()
    ]
    assert held_warnings == alarms


def test_a_concurrent_flood_across_instances_still_stops_at_the_limit(make_remediation):
    first = make_remediation(MAX_ADDS_PER_COLLECTION_PER_HOUR=str(LIMIT))
    bodies = _flood(first, 24)

    # Two runtimes share nothing but storage, like two function app instances.
    from shared.app.runtime import Runtime, process_overrides
    from shared.platform.settings import load_settings

    second = Runtime(
        load_settings(None), overrides=replace(process_overrides(), clock=first.runtime.clock)
    )
    try:

        def handle(pair: tuple[int, dict]) -> str | None:
            index, body = pair
            runtime = first.runtime if index % 2 else second
            outcome = runtime.remediator.handle(json.dumps(body), message_id=str(index))
            return outcome.kind if outcome else None

        with ThreadPoolExecutor(max_workers=8) as pool:
            kinds = Counter(pool.map(handle, enumerate(bodies)))
    finally:
        second.close()

    assert sum(_adds(first).values()) == LIMIT
    assert kinds == {"added": LIMIT, "held-rate-limit": 24 - LIMIT}


def test_held_requests_are_kept_and_released_by_an_operator(guarded):
    bodies = _flood(guarded, FLOOD)
    _deliver_all(guarded, bodies)
    held = [b for b in bodies if guarded.outcome(b).kind == "held-rate-limit"]
    assert len(held) == FLOOD - LIMIT

    listed = _cli(guarded, "held", "list", "--collection", COLLECTION.lower(), "--json")
    assert listed.exit_code == 0
    assert sorted(h["id"] for h in json.loads(listed.stdout)) == sorted(_held_ids(held))

    # a redelivery of a held message changes nothing
    _deliver_all(guarded, held[:2])
    assert sum(_adds(guarded).values()) == LIMIT

    released = _cli(guarded, "held", "release", *_held_ids(held[:3]), "--by", "alice")
    assert released.exit_code == 0, released.output
    assert "released 3 held add(s)" in released.stdout
    requeued = guarded.requeued()
    assert sorted(r.record_id for r in requeued) == sorted(b["record_id"] for b in held[:3])
    for request in requeued:
        guarded.deliver(request.model_dump_json(), message_id=f"r-{request.record_id}")

    adds = _adds(guarded)
    assert sum(adds.values()) == LIMIT + 3  # released adds skip the guard
    assert set(adds.values()) == {1}
    for body in held[:3]:
        outcome = guarded.outcome(body)
        assert outcome.kind == "added"
        assert outcome.decided_by == "alice"
        assert outcome.held_utc is not None
    remaining = json.loads(_cli(guarded, "held", "list", "--json").stdout)
    assert sorted(h["id"] for h in remaining) == sorted(_held_ids(held[3:]))


def test_discarded_holds_are_decided_for_good(guarded):
    bodies = _flood(guarded, FLOOD)
    _deliver_all(guarded, bodies)
    held = [b for b in bodies if guarded.outcome(b).kind == "held-rate-limit"]

    result = _cli(guarded, "held", "discard", "--collection", COLLECTION, "--by", "bob")
    assert result.exit_code == 0, result.output
    assert f"discarded {len(held)} held add(s)" in result.stdout
    for body in held:
        outcome = guarded.outcome(body)
        assert (outcome.kind, outcome.decided_by) == ("discarded", "bob")
    _deliver_all(guarded, held)  # a late redelivery adds nothing
    assert sum(_adds(guarded).values()) == LIMIT
    assert json.loads(_cli(guarded, "held", "list", "--json").stdout) == []
    again = _cli(guarded, "held", "release", *_held_ids(held[:1]))
    assert again.exit_code == 1
    assert "not held" in again.stderr


def test_release_needs_an_explicit_choice(guarded):
    result = _cli(guarded, "held", "release")
    assert result.exit_code == 2
    assert "--all" in result.stderr


def test_the_window_slides_and_adds_resume(guarded):
    bodies = _flood(guarded, LIMIT + 2)
    _deliver_all(guarded, bodies[: LIMIT + 1])
    assert guarded.outcome(bodies[LIMIT]).kind == "held-rate-limit"

    guarded.runtime.remediator._clock = lambda: scenario.FIXED_NOW + timedelta(minutes=61)
    _deliver_all(guarded, bodies[LIMIT + 1 :])

    assert guarded.outcome(bodies[LIMIT + 1]).kind == "added"
    assert guarded.outcome(bodies[LIMIT]).kind == "held-rate-limit"  # still waits for review


def test_adds_that_were_not_needed_do_not_use_the_allowance(guarded):
    # PC-MEMBER01 is already a member of PS100123: no add, so no slot taken.
    member = fixture("03-already-member")["body"]
    for n in range(LIMIT + 2):
        body = {**member, "record_id": 700_000 + n}
        guarded.deliver(json.dumps(body), message_id=f"member-{n}")
        assert guarded.outcome(body).kind == "already-member"
    bodies = _flood(guarded, LIMIT + 1)
    _deliver_all(guarded, bodies)
    assert Counter(guarded.outcome(b).kind for b in bodies) == {
        "added": LIMIT,
        "held-rate-limit": 1,
    }
    # at the limit, a device that is already in is still told so, not held
    late = {**member, "record_id": 700_100}
    guarded.deliver(json.dumps(late), message_id="member-late")
    assert guarded.outcome(late).kind == "already-member"


def test_a_retried_add_keeps_its_slot(guarded):
    bodies = _flood(guarded, LIMIT + 1)
    # every attempt of the client's retry policy fails: the delivery fails, the host retries
    guarded.adminservice.fail_next(5, status=503, route="AddMembershipRule")
    # at least one delivery fails (more when a loaded Azurite also stalls a write)
    assert guarded.deliver_like_host(json.dumps(bodies[0]), message_id="retried") >= 1
    _deliver_all(guarded, bodies[1:])
    kinds = Counter(guarded.outcome(b).kind for b in bodies)
    # the retry did not count twice: LIMIT adds in total, one held
    assert kinds == {"added": LIMIT, "held-rate-limit": 1}


def test_status_shows_what_is_held(guarded):
    bodies = _flood(guarded, LIMIT + 3)
    _deliver_all(guarded, bodies)
    result = _cli(guarded, "status", "--json")
    figures = json.loads(result.stdout)
    assert figures["held"] == {COLLECTION: 3}


def test_remove_rules_are_not_limited(guarded):
    _deliver_all(guarded, _flood(guarded, LIMIT + 1))  # the guard now holds adds
    body = body_of(fixture("08-remove"))
    guarded.deliver(body, message_id="remove")
    assert guarded.outcome(RemediationRequest.model_validate_json(body)).kind == "removed"


def test_a_rules_own_limit_holds_its_adds_below_the_default(make_remediation, tmp_path, caplog):
    caplog.set_level(logging.WARNING)
    scenario_rules = tmp_path / "rules.json"
    source = json.loads((REPO / "tests" / "fixtures" / "remediation-rules.json").read_text())
    for rule in source["rules"]:
        if rule["collection_id"] == COLLECTION and rule["action"] == "add":
            rule["max_adds_per_hour"] = 2
    scenario_rules.write_text(json.dumps(source), encoding="utf-8")
    remediation = make_remediation(
        MAX_ADDS_PER_COLLECTION_PER_HOUR="100", REMEDIATION_RULES_FILE=str(scenario_rules)
    )
    bodies = _flood(remediation, 5)
    _deliver_all(remediation, bodies)
    kinds = Counter(remediation.outcome(b).kind for b in bodies)
    assert kinds == {"added": 2, "held-rate-limit": 3}
    held = remediation.outcome(bodies[-1])
    assert held is not None and "the limit of 2" in held.reason
    alarms = [r.getMessage() for r in caplog.records if "BLAST-RADIUS GUARD" in r.getMessage()]
    assert len(alarms) == 1 and "the limit of 2" in alarms[0]
