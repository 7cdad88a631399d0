"""The log redaction the runtime installs: a library that logs a known secret, at any
level and in any part of a record, hands every handler ``***`` instead."""

from __future__ import annotations

import base64
import logging
from urllib.parse import quote

import pytest

from shared.app.secret_settings import register_secrets
from shared.platform.redaction import (
    REDACTED,
    SecretRegistry,
    connection_string_secrets,
    secrets,
    url_secrets,
)
from shared.platform.settings import load_settings

SQL_PASSWORD = "Redaction-SQL;Pa55word"
SERVICE_PASSWORD = "Redaction-Svc-Pa55word"
STORAGE_KEY = base64.b64encode(b"redaction test storage key 0123456789").decode()
FUNCTION_KEY = "Redaction-FunctionKey-31337"
TOKEN = "eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiJyZWRhY3Rpb24ifQ.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(name)s %(message)s"))
        self.lines: list[str] = []
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.lines.append(self.format(record))


@pytest.fixture
def library_log():
    """A third-party logger at DEBUG, after the runtime registered the settings."""
    register_secrets(
        load_settings(
            {
                "SITE_DB_CONNECTION": "Driver={ODBC Driver 18 for SQL Server};Server=sql01;"
                f"Uid=reader;Pwd={{{SQL_PASSWORD}}}",
                "AzureWebJobsStorage": "DefaultEndpointsProtocol=https;AccountName=stcm;"
                f"AccountKey={STORAGE_KEY}",
                "ADMINSERVICE_PASSWORD": SERVICE_PASSWORD,
                "WEBSERVICE_URL": f"https://remediate.contoso.com/api/add?code={FUNCTION_KEY}",
            }
        )
    )
    secrets.add_token(TOKEN)
    logger = logging.getLogger("urllib3.redaction-test")
    collect = Collect()
    logger.addHandler(collect)
    logger.setLevel(logging.DEBUG)
    try:
        yield logger, collect
    finally:
        logger.removeHandler(collect)


def test_secrets_in_messages_and_arguments_are_redacted(library_log):
    logger, collect = library_log
    logger.debug("connect %s", f"Pwd={SQL_PASSWORD};")
    logger.debug(f"password={quote(SERVICE_PASSWORD, safe='')}&user=svc")
    logger.info("Authorization: Bearer %(token)s", {"token": TOKEN})
    logger.debug("key %s", base64.b64encode(SERVICE_PASSWORD.encode()).decode())
    logger.warning("key=%s nothing else", STORAGE_KEY)
    assert len(collect.lines) == 5
    text = "\n".join(collect.lines)
    for secret in (SQL_PASSWORD, SERVICE_PASSWORD, STORAGE_KEY, TOKEN, quote(SERVICE_PASSWORD)):
        assert secret not in text
    assert text.count(REDACTED) == 5
    assert "connect Pwd=***;" in text and "&user=svc" in text  # the rest stays readable


def test_secrets_in_exceptions_and_stacks_are_redacted(library_log):
    logger, collect = library_log
    try:
        raise ValueError(f"login failed for password {SERVICE_PASSWORD}")
    except ValueError:
        logger.exception("failed")
    logger.debug("here", stack_info=True, extra={})
    record = collect.records[0]
    assert record.exc_info is None  # handlers that render exc_info themselves get nothing
    assert "ValueError: login failed for password ***" in collect.lines[0]
    assert SERVICE_PASSWORD not in "\n".join(collect.lines)


def test_records_without_secrets_are_untouched(library_log):
    logger, collect = library_log
    logger.debug("plain %s of %d", "text", 3)
    (record,) = collect.records
    assert record.msg == "plain %s of %d" and record.args == ("text", 3)


def test_the_registry_ignores_short_values_and_keeps_recent_tokens():
    registry = SecretRegistry()
    registry.add("short", None, "")
    assert registry.redact("a short word") == "a short word"
    for n in range(100):
        registry.add_token(f"token-number-{n:04d}")
    assert registry.redact("token-number-0099 token-number-0000") == "*** token-number-0000"


def test_connection_string_secrets():
    assert connection_string_secrets(
        "Driver={x};PWD={a;b}}c};Uid=u", "AccountName=a;AccountKey=k3y=;SharedAccessSignature=sv=1"
    )[1:] == ["a;b}c", "AccountName=a;AccountKey=k3y=;SharedAccessSignature=sv=1", "k3y=", "sv=1"]


def test_keys_in_url_query_strings_are_secrets():
    found = url_secrets(
        "https://remediate.contoso.com/api/membership?code=FunctionKey-9a8b7c6d5e&x=",
        None,
        "https://cmg.contoso.com/CCM_Proxy_ServerAuth/72057594037927939/AdminService",
    )
    assert found == ["FunctionKey-9a8b7c6d5e"]


def test_the_web_service_key_in_its_url_is_redacted(library_log):
    logger, collect = library_log
    logger.warning("refused https://remediate.contoso.com/api/add?code=%s", FUNCTION_KEY)
    assert collect.lines == [
        f"urllib3.redaction-test refused https://remediate.contoso.com/api/add?code={REDACTED}"
    ]
