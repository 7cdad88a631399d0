"""The demo's own entry point (``python -m devstack.demo``, ``scripts/demo.sh``)."""

from __future__ import annotations

import contextlib

import pytest

import devstack.demo
from devstack.stack import LocalStack

pytestmark = pytest.mark.stack


def test_demo_runs_the_whole_pipeline(local_ca, entra, functions_host, monkeypatch, capsys):
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
