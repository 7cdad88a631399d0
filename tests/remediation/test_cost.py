"""What one message costs does not grow with the collection: no message reads a
collection's whole rule list, whether it holds 20 or 20,000 direct rules."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers import device, request_document

pytestmark = pytest.mark.stack

COLLECTION = "PS100123"
BIG = 20_000
#: Two rounds of devices whose messages are handled; in each, half are members already.
ROUNDS = [[device(16_900_000 + 100 * r + n, f"COST{r}N{n:02}") for n in range(16)] for r in (0, 1)]


def handle_all(remediation, devices, offset: int) -> dict[str, int]:
    """Deliver one Project message per device; the AdminService's calls and bytes."""
    remediation.adminservice.reset_calls()
    for n, record in enumerate(devices):
        body = request_document(
            record_id=offset + n,
            machine_name=record.name,
            collection_id=COLLECTION,
            time_utc="2026-11-20T08:15:00Z",
        )
        remediation.deliver(json.dumps(body), message_id=f"m-{offset + n}")
    calls = remediation.adminservice.calls
    return {
        "calls": len(calls),
        "bytes": sum(c.response_bytes for c in calls),
        "adds": sum(1 for c in calls if c.route == "AddMembershipRule"),
    }


@pytest.mark.parametrize(
    "remediation",
    [{}, {"IDENTITY_SOURCE": "adminservice"}],
    indirect=True,
    ids=["sitedb", "adminservice"],
)
def test_bytes_per_message_do_not_grow_with_the_collection(remediation):
    stack, service = remediation.stack, remediation.adminservice
    for devices in ROUNDS:
        stack.site_db.insert_devices(devices)
        for record in devices:
            service.add_device(record)
    small_round, big_round = ([d.resource_id for d in devices[8:]] for devices in ROUNDS)

    service.set_direct_members(COLLECTION, small_round)
    small = handle_all(remediation, ROUNDS[0], offset=1000)
    service.set_direct_members(COLLECTION, [*big_round, *range(17_000_000, 17_000_000 + BIG)])
    big = handle_all(remediation, ROUNDS[1], offset=2000)

    assert small["adds"] == big["adds"] == 8
    # the same calls, and about the same bytes, for 20,008 rules as for 8
    assert big["calls"] == small["calls"]
    assert big["bytes"] <= small["bytes"] * 1.05 + 512
    per_message = big["bytes"] / len(ROUNDS[1])
    assert per_message < 4096, per_message


@pytest.mark.parametrize("remediation", [{"ADMINSERVICE_MAX_CONCURRENCY": "3"}], indirect=True)
def test_an_instance_never_has_more_adminservice_calls_open_than_its_cap(remediation):
    service = remediation.adminservice
    service.set_latency(0.2)
    client = remediation.runtime.adminservice
    client.token()  # the token first: its refusal pause is not what this is about
    seen: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            seen.append(service.in_flight)
            time.sleep(0.005)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=12) as pool:
            found = list(pool.map(lambda _: client.find_devices("PC-ADD01"), range(12)))
    finally:
        done.set()
        sampler.join()
    assert all(len(records) == 1 for records in found)
    assert 2 <= max(seen) <= 3
