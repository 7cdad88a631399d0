"""Connection strings: parsed as drivers parse them; settings refuse any that turn
encryption or the certificate check off, naming the keyword and never the password."""

from __future__ import annotations

import pytest

from shared.errors import ConfigurationError
from shared.platform.connection_strings import (
    check_site_db_tls,
    check_storage_tls,
    parse_conninfo,
    parse_odbc,
)
from shared.platform.settings import load_settings

SQL18 = "Driver={ODBC Driver 18 for SQL Server};Server=sql01.contoso.com,1433;Database=CM_PS1"
PG = "Driver={PostgreSQL Unicode};Server=127.0.0.1;Port=5432;Database=CM_PS1"
PASSWORD = "Pa55;w}rd-Secret!"
PWD = "Pwd={Pa55;w}}rd-Secret!}"
STORAGE = "UseDevelopmentStorage=true"


def test_braced_values_hold_semicolons_and_doubled_braces():
    attributes = parse_odbc(f"{SQL18};Uid=reader;{PWD};Encrypt=yes;")
    assert [(a.keyword, a.value) for a in attributes] == [
        ("Driver", "ODBC Driver 18 for SQL Server"),
        ("Server", "sql01.contoso.com,1433"),
        ("Database", "CM_PS1"),
        ("Uid", "reader"),
        ("Pwd", PASSWORD),
        ("Encrypt", "yes"),
    ]
    assert not any(a.padded for a in attributes)


def test_keywords_are_case_insensitive_and_spaces_are_noted():
    (attribute,) = parse_odbc(" ENCRYPT = no ")
    assert attribute.key == "encrypt" and attribute.value == "no" and attribute.padded
    assert parse_odbc(";; ;Encrypt=yes;;")[0].padded is False


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Pwd={never closed", "Pwd: the braced value has no closing '}'"),
        ("Pwd={a}b;Encrypt=yes", "Pwd: text follows the closing '}'"),
        ("Driver={x};garbage", "attribute 2 has no '='"),
        ("=value", "attribute 1 has no usable keyword"),
    ],
)
def test_malformed_strings_are_refused_without_quoting_values(text, message):
    with pytest.raises(ValueError, match="^" + message.replace("{", r"\{").replace("(", r"\(")):
        parse_odbc(text)


def test_libpq_options_with_quotes_and_escapes():
    assert parse_conninfo(r"sslrootcert='/etc/my ca\'s.pem'  sslmode = verify-full x=a\ b") == {
        "sslrootcert": ["/etc/my ca's.pem"],
        "sslmode": ["verify-full"],
        "x": ["a b"],
    }
    with pytest.raises(ValueError, match="no closing quote"):
        parse_conninfo("sslrootcert='/tmp/x")


@pytest.mark.parametrize(
    "text",
    [
        SQL18,  # ODBC Driver 18 encrypts and checks the certificate by default
        f"{SQL18};Encrypt=yes;TrustServerCertificate=no",
        f"{SQL18};encrypt=Strict;HostNameInCertificate=sql01.contoso.com",
        f"{SQL18};Encrypt=Mandatory;TrustServerCertificate=False",
        "Driver={ODBC Driver 17 for SQL Server};Server=sql01;Encrypt=yes",
        f"{PG};SSLmode=verify-full",
        f"{PG};sslmode=verify-full;pqopt={{sslrootcert=/etc/ca.pem}}",
        f"{PG};CA=verify-full;pqopt={{sslmode=verify-full sslrootcert=/etc/ca.pem}}",
    ],
)
def test_verified_tls_is_accepted(text):
    check_site_db_tls(f"{text};Uid=reader;{PWD}")
    settings = load_settings(
        {"SITE_DB_CONNECTION": f"{text};{PWD}", "AzureWebJobsStorage": STORAGE}
    )
    assert PWD in settings.site_db_connection.get_secret_value()


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (f"{SQL18};TrustServerCertificate=yes", "TrustServerCertificate=yes turns off the check"),
        (f"{SQL18};trustservercertificate=TRUE", "trustservercertificate=TRUE turns off"),
        (f"{SQL18};TrustServerCertificate={{yes}}", "TrustServerCertificate=yes turns off"),
        (f"{SQL18};TrustServerCertificate=1", "TrustServerCertificate=1 turns off"),
        (f"{SQL18};Encrypt=no", "Encrypt=no does not require an encrypted"),
        (f"{SQL18};Encrypt=false", "Encrypt=false does not require"),
        (f"{SQL18};ENCRYPT=Optional", "ENCRYPT=Optional does not require"),
        (f"{SQL18};Encrypt=yes;Encrypt=no", "Encrypt appears more than once"),
        (f"{SQL18}; TrustServerCertificate =no", "TrustServerCertificate: remove the spaces"),
        (
            "Driver={ODBC Driver 17 for SQL Server};Server=sql01",
            "Driver={ODBC Driver 17 for SQL Server} does not encrypt by default",
        ),
        ("Driver={SQL Server};Server=sql01", "Driver={SQL Server} does not encrypt by default"),
        ("Driver={FreeTDS};Server=sql01", "Driver={FreeTDS} is not a driver whose encryption"),
        ("DSN=sitedb", "DSN=/FILEDSN= is not supported"),
        ("Server=sql01;Database=CM_PS1", "Driver= is missing"),
        (f"{PG}", "SSLmode= is missing"),
        (f"{PG};SSLmode=disable", "SSLmode=disable does not check the server certificate"),
        (f"{PG};SSLmode=allow", "SSLmode=allow does not check"),
        (f"{PG};SSLmode=prefer", "SSLmode=prefer does not check"),
        (f"{PG};SSLmode=require", "SSLmode=require does not check"),
        (f"{PG};SSLmode=verify-ca", "SSLmode=verify-ca does not check"),
        # psqlODBC reads these as "disable": only the exact spelling counts
        (f"{PG};SSLmode=Verify-Full", "SSLmode=Verify-Full does not check"),
        (f"{PG};SSLmode= verify-full", "SSLmode: remove the spaces"),
        (f"{PG};CA=require", "CA=require does not check"),
        (f"{PG};SSLmode=verify-full;sslmode=disable", "SSLmode appears more than once"),
        (f"{PG};SSLmode=verify-full;pqopt={{sslmode=disable}}", "pqopt: sslmode=disable"),
        (f"{PG};SSLmode=verify-full;pqopt={{requiressl=0}}", "pqopt: requiressl"),
    ],
)
def test_connection_strings_that_weaken_tls_are_refused_by_name(text, named):
    with pytest.raises(ConfigurationError) as caught:
        load_settings(
            {"SITE_DB_CONNECTION": f"{text};Uid=reader;{PWD}", "AzureWebJobsStorage": STORAGE}
        )
    message = str(caught.value)
    assert f"SITE_DB_CONNECTION: {named}" in message
    assert "Pa55" not in message and "rd-Secret" not in message
    assert caught.value.__context__ is None  # pydantic's error quotes the input


@pytest.mark.parametrize(
    "text",
    [
        STORAGE,
        "DefaultEndpointsProtocol=https;AccountName=stcm;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
        "BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
        "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1;"
        "TableEndpoint=http://localhost:10002/devstoreaccount1",
        "QueueEndpoint=https://stcm.queue.core.windows.net;SharedAccessSignature=sv=x&sig=y",
    ],
)
def test_storage_over_https_or_a_local_emulator_is_accepted(text):
    check_storage_tls(text)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        (
            "DefaultEndpointsProtocol=http;AccountName=stcm;AccountKey=a2V5",
            "DefaultEndpointsProtocol=http",
        ),
        (
            "DefaultEndpointsProtocol=https;AccountName=stcm;AccountKey=a2V5;"
            "QueueEndpoint=http://stcm.queue.core.windows.net",
            "QueueEndpoint must be an https:// URL",
        ),
        (
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=a2V5;"
            "QueueEndpoint=http://127.0.0.1:10001/devstoreaccount1",
            "DefaultEndpointsProtocol=http sends requests",
        ),
    ],
)
def test_storage_without_tls_is_refused(text, named):
    with pytest.raises(ConfigurationError) as caught:
        load_settings({"SITE_DB_CONNECTION": SQL18, "AzureWebJobsStorage": text})
    assert f"AzureWebJobsStorage: {named}" in str(caught.value)
    assert "a2V5" not in str(caught.value)
