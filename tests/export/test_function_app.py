"""The timer function through Microsoft's worker against the local stack, and the layering
rule that keeps ``azure.functions`` out of the core. Indexing and first-use validation
are in tests/worker."""

from __future__ import annotations

import re
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from devstack.datagen import GeneratedStatusMessage
from shared.app.runtime import get_runtime
from tests.export.conftest import ALL_PATHS

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.stack
@ALL_PATHS
def test_timer_function_exports_through_the_real_trigger(export_source, app, stack):
    messages = [
        GeneratedStatusMessage(
            site_code="PS1",
            machine_name=f"PC{n:02}",
            time_utc=datetime(2026, 11, 20, 9, n),
            insertion_strings=("MsgType_Office365Upgrade", value),
        )
        for n, value in enumerate(
            ["projectInstalled", "visioInstalled", "roomPluginInstalled", "nothing"]
        )
    ]
    ids = stack.site_db.insert_status_messages(messages)
    app.export(past_due=True)
    got = Counter((r.record_id, r.rule, r.collection_id) for r in stack.drain())
    assert got == Counter(
        {
            (ids[0], "project-64bit-reinstall", "PS100123"): 1,
            (ids[1], "visio-64bit-reinstall", "PS100124"): 1,
            (ids[2], "outlook-room-plugin-reinstall", "PS100125"): 1,
        }
    )
    app.export()
    assert stack.drain() == []
    if export_source == "adminservice":
        # Without SITE_DB_CONNECTION the SQL reader was never even built.
        assert "site_database" not in get_runtime().__dict__


def test_core_never_imports_azure_functions():
    offenders = [
        path.relative_to(REPO)
        for path in (REPO / "shared").rglob("*.py")
        if re.search(
            r"^\s*(import azure\.functions|from azure\.functions|from azure import functions)",
            path.read_text(encoding="utf-8"),
            re.MULTILINE,
        )
    ]
    assert offenders == []
