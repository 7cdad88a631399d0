"""``cmremediate export`` runs the same export as the timer, from the same settings."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from devstack.datagen import GeneratedStatusMessage

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cmremediate_cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


@pytest.fixture
def settings_file(stack, tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(json.dumps({"IsEncrypted": False, "Values": stack.settings_values()}))
    stack.site_db.insert_status_messages(
        [
            GeneratedStatusMessage(
                site_code="PS1",
                machine_name="PC-CLI01",
                time_utc=datetime(2026, 11, 20, 9, 0),
                insertion_strings=("MsgType_Office365Upgrade", "visioInstalled"),
            )
        ]
    )
    return path


def test_dry_run_shows_what_would_be_enqueued_and_sends_nothing(stack, settings_file):
    result = cli("export", "--dry-run", "--json", "--settings", str(settings_file))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["dry_run"] is True
    assert [(r["machine_name"], r["rule"]) for r in report["requests"]] == [
        ("PC-CLI01", "visio-64bit-reinstall")
    ]
    assert stack.drain() == []


def test_export_enqueues_and_prints_a_table(stack, settings_file):
    result = cli("export", "--settings", str(settings_file))
    assert result.returncode == 0, result.stderr
    assert "PS1" in result.stdout and "done" in result.stdout
    assert [r.machine_name for r in stack.drain()] == ["PC-CLI01"]


def test_bad_settings_exit_2_with_one_clear_line(tmp_path):
    path = tmp_path / "local.settings.json"
    path.write_text(
        json.dumps(
            {
                "Values": {
                    "SITE_DB_CONNECTION": "Driver=x",
                    "AzureWebJobsStorage": "x",
                    "EXPORT_MAX_MESSAGES_PER_RUN": "lots",
                }
            }
        )
    )
    result = cli("export", "--settings", str(path))
    assert result.returncode == 2
    assert "EXPORT_MAX_MESSAGES_PER_RUN: Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.stderr
