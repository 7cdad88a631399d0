"""Bounded probes: the caller waits until its deadline and no longer; at most one probe
in flight per name, a later caller waits on it."""

from __future__ import annotations

import threading
import time

import pytest

from shared.platform.probes import Deadline, Probes


@pytest.fixture
def gate() -> threading.Event:
    event = threading.Event()
    yield event
    event.set()  # let the probes of a test end


def probe_threads(name: str = "hung") -> list[str]:
    """This test's probe threads: probes other tests left running end when they end."""
    return [t.name for t in threading.enumerate() if t.name == f"probe: {name}"]


def test_an_answer_within_the_deadline():
    answer = Probes().start("quick", lambda: 42).wait(Deadline.after(5))
    assert answer.done and answer.value == 42 and answer.error is None
    assert not answer.inherited


def test_an_exception_is_handed_to_the_caller():
    def fails() -> None:
        raise ValueError("no")

    answer = Probes().start("failing", fails).wait(Deadline.after(5))
    assert answer.done and isinstance(answer.error, ValueError)


def test_a_hung_probe_costs_the_deadline_and_no_more(gate):
    probes = Probes()
    started = time.monotonic()
    answer = probes.start("hung", gate.wait).wait(Deadline.after(0.3))
    elapsed = time.monotonic() - started
    assert not answer.done
    assert 0.3 <= elapsed < 1.0
    assert answer.late(Deadline(0, 8)) == "no answer within 8 s"
    assert probes.in_flight() == ["hung"]
    thread = next(t for t in threading.enumerate() if t.name == "probe: hung")
    assert thread.daemon  # cannot hold up the interpreter's exit


def test_one_probe_in_flight_per_name(gate):
    probes = Probes()
    calls: list[int] = []

    def hangs() -> None:
        calls.append(1)
        gate.wait()

    probes.start("hung", hangs).wait(Deadline.after(0.1))
    before = probe_threads()
    for _ in range(5):
        later = probes.start("hung", hangs).wait(Deadline.after(0.05))
        assert not later.done and later.inherited
    assert probe_threads() == before
    assert len(calls) == 1
    assert "by an earlier call is still waiting" in later.late(Deadline(0, 8))
    # Once it ends, the next call starts a new one.
    gate.set()
    later = probes.start("hung", hangs).wait(Deadline.after(2))
    assert later.done
    deadline = time.monotonic() + 2
    while probes.in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    fresh = probes.start("hung", lambda: "new").wait(Deadline.after(2))
    assert fresh.done and fresh.value == "new" and not fresh.inherited


def test_probes_of_different_names_run_in_parallel(gate):
    probes = Probes()
    pending = [probes.start(f"p{n}", gate.wait) for n in range(4)]
    deadline = Deadline.after(0.3)
    started = time.monotonic()
    answers = [p.wait(deadline) for p in pending]
    assert time.monotonic() - started < 1.0  # one deadline for all, not one each
    assert not any(a.done for a in answers)
