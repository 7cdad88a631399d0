"""The README's run command: the demo performs the pipeline end to end, through its own
entry point (``python -m devstack.demo``, ``scripts/demo.sh``)."""

from __future__ import annotations

import contextlib
import io

import pytest
from rich.console import Console

import devstack.demo
from devstack.demo import run_demo
from devstack.stack import LocalStack

pytestmark = pytest.mark.stack


@pytest.mark.parametrize("export_source", ["sitedb", "adminservice"])
def test_demo_shows_every_outcome_and_stops_the_stack(
    local_ca, entra, functions_host, export_source
):
    # ``entra`` holds port 443 for this test session; the demo's simulator shares it.
    # The demo runs its functions through the session's worker host (one per process).
    out = io.StringIO()
    run_demo(
        Console(file=out, width=200, color_system=None),
        ca=local_ca,
        host=functions_host,
        export_source=export_source,
    )
    text = out.getvalue()
    assert "The queue function handled 32 messages" in text
    for kind in ("added", "already-member", "ambiguous", "unknown-device"):
        assert kind in text
    assert "not a 39997 message" in text
    assert "A second export run enqueued 0 messages" in text
    assert text.rstrip().endswith("Local stack stopped.")


def test_demo_entry_point_runs_the_whole_pipeline(
    local_ca, entra, functions_host, monkeypatch, capsys
):
    # ``entra`` holds 127.0.0.1:443 for this session; the demo's simulators share its CA.
    monkeypatch.setattr(devstack.demo, "LocalStack", lambda **_: LocalStack(ca=local_ca))
    # The worker library allows one host per process: the demo uses the session's.
    monkeypatch.setattr(
        devstack.demo, "functions_host", lambda host=None: contextlib.nullcontext(functions_host)
    )
    exit_code = devstack.demo.main([])
    stdout = capsys.readouterr().out
    assert exit_code == 0, stdout
    assert "every status message, device by device" in stdout
    assert "The queue function handled 32 messages" in stdout
