"""The README's run command: the demo performs the pipeline end to end."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from devstack.demo import run_demo

pytestmark = pytest.mark.stack


def test_demo_shows_every_outcome_and_stops_the_stack(local_ca, entra, functions_host):
    # ``entra`` holds port 443 for this test session; the demo's simulator shares it.
    # The demo runs its functions through the session's worker host (one per process).
    out = io.StringIO()
    run_demo(Console(file=out, width=200, color_system=None), ca=local_ca, host=functions_host)
    text = out.getvalue()
    assert "The queue function handled 32 messages" in text
    for kind in ("added", "already-member", "ambiguous", "unknown-device"):
        assert kind in text
    assert "not a 39997 message" in text
    assert "A second export run enqueued 0 messages" in text
    assert text.rstrip().endswith("Local stack stopped.")
