"""Connection strings, parsed the way their drivers parse them, and checked for TLS.

SITE_DB_CONNECTION is an ODBC connection string: ``keyword=value`` pairs separated by
``;``, keywords case-insensitive, a value in braces may hold ``;`` and writes ``}`` as
``}}``. A setting must not be able to turn off encryption or the check of the server
certificate, so the keywords that would are refused here, before anything connects.

Error messages name keywords and TLS values, never other values: a connection string
carries a password.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit


@dataclass(frozen=True, slots=True)
class Attribute:
    """One ``keyword=value`` of an ODBC connection string."""

    keyword: str
    """As written, without the spaces around it."""
    value: str
    """Braces removed and ``}}`` unescaped."""
    padded: bool
    """Spaces around the keyword or around an unbraced value: drivers differ in whether
    they strip them (psqlODBC does not, and then ignores the keyword)."""

    @property
    def key(self) -> str:
        """The keyword as drivers compare it: case-insensitively."""
        return self.keyword.lower()


def parse_odbc(text: str) -> list[Attribute]:
    """The attributes of an ODBC connection string, in order (repeats kept).

    Raises ValueError for text a driver would misread; the message quotes no value.
    """
    attributes: list[Attribute] = []
    position, end = 0, len(text)
    while position < end:
        semicolon = text.find(";", position)
        if not text[position : end if semicolon < 0 else semicolon].strip():
            # empty attributes (";;", a trailing ";" or spaces) are allowed
            position = end if semicolon < 0 else semicolon + 1
            continue
        equals = text.find("=", position)
        if equals < 0 or (0 <= semicolon < equals):
            raise ValueError(
                f"attribute {len(attributes) + 1} has no '=' (expected keyword=value pairs "
                "separated by ';')"
            )
        raw_keyword = text[position:equals]
        keyword = raw_keyword.strip()
        if not keyword or "{" in keyword or "}" in keyword:
            raise ValueError(f"attribute {len(attributes) + 1} has no usable keyword before '='")
        position = equals + 1
        lead = position
        while position < end and text[position] == " ":
            position += 1
        if position < end and text[position] == "{":
            padded = raw_keyword != keyword or position > lead
            value, position = _braced(text, position + 1, keyword)
            trail = position
            while position < end and text[position] == " ":
                position += 1
            if position < end and text[position] != ";":
                raise ValueError(
                    f"{keyword}: text follows the closing '}}' of its braced value (a '}}' "
                    "inside braces is written '}}')"
                )
            padded = padded or position > trail
        else:
            stop = text.find(";", lead)
            stop = end if stop < 0 else stop
            raw_value = text[lead:stop]
            value = raw_value.strip()
            padded = raw_keyword != keyword or raw_value != value
            position = stop
        attributes.append(Attribute(keyword, value, padded))
    return attributes


def _braced(text: str, position: int, keyword: str) -> tuple[str, int]:
    """The value inside braces starting at ``position``, and the index after ``}``."""
    value: list[str] = []
    while True:
        close = text.find("}", position)
        if close < 0:
            raise ValueError(f"{keyword}: the braced value has no closing '}}'")
        value.append(text[position:close])
        if text[close + 1 : close + 2] == "}":
            value.append("}")
            position = close + 2
            continue
        return "".join(value), close + 1


#: libpq conninfo (psqlODBC's pqopt): keyword = value, values optionally in single
#: quotes with backslash escapes.
_CONNINFO_KEYWORD: Final = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*")


def parse_conninfo(text: str) -> dict[str, list[str]]:
    """A libpq ``keyword=value ...`` string as keyword -> values (lower-case keywords)."""
    found: dict[str, list[str]] = {}
    position = 0
    while text[position:].strip():
        match = _CONNINFO_KEYWORD.match(text, position)
        if match is None:
            raise ValueError("pqopt: expected libpq options 'keyword=value keyword=value'")
        keyword, position = match.group(1).lower(), match.end()
        value: list[str] = []
        if text[position : position + 1] == "'":
            position += 1
            while True:
                if position >= len(text):
                    raise ValueError(f"pqopt: the quoted value of {keyword} has no closing quote")
                char = text[position]
                if char == "\\" and position + 1 < len(text):
                    value.append(text[position + 1])
                    position += 2
                elif char == "'":
                    position += 1
                    break
                else:
                    value.append(char)
                    position += 1
        else:
            while position < len(text) and not text[position].isspace():
                if text[position] == "\\" and position + 1 < len(text):
                    position += 1
                value.append(text[position])
                position += 1
        found.setdefault(keyword, []).append("".join(value))
    return found


# -- TLS of the site database connection ------------------------------------------------

_SQL_SERVER_DRIVER: Final = re.compile(r"sql server", re.IGNORECASE)
_ODBC_DRIVER_VERSION: Final = re.compile(r"^odbc driver (\d+) for sql server$", re.IGNORECASE)
_POSTGRESQL_DRIVER: Final = re.compile(r"postgres|psqlodbc", re.IGNORECASE)
_ENCRYPT_ON: Final = frozenset({"yes", "true", "mandatory", "strict"})
_TRUST_OFF: Final = frozenset({"no", "false"})
#: psqlODBC reads SSLmode by its first letters ("Verify-Full" or " verify-full" fall back
#: to disable) and libpq compares exactly: only this spelling is certain.
_VERIFY_FULL: Final = "verify-full"
_PSQLODBC_SSLMODE: Final = ("sslmode", "ca")  # "CA" is psqlODBC's abbreviation
_PSQLODBC_PQOPT: Final = ("pqopt", "d5")
_SQL_SERVER_TLS: Final = ("encrypt", "trustservercertificate")


def check_site_db_tls(text: str) -> None:
    """Raise ValueError, naming the keyword and the fix, for a connection string that
    does not encrypt, or does not check the server certificate and its host name."""
    attributes = parse_odbc(text)
    by_key: dict[str, list[Attribute]] = {}
    for attribute in attributes:
        by_key.setdefault(attribute.key, []).append(attribute)
    if "dsn" in by_key or "filedsn" in by_key:
        raise ValueError(
            "DSN=/FILEDSN= is not supported: its encryption options live outside the "
            "connection string, where they cannot be checked; name the driver instead, "
            "e.g. Driver={ODBC Driver 18 for SQL Server};Server=sql01.contoso.com,1433;..."
        )
    drivers = by_key.get("driver", [])
    if not drivers:
        raise ValueError(
            "Driver= is missing: name the ODBC driver, e.g. Driver={ODBC Driver 18 for SQL Server}"
        )
    if len(drivers) > 1:
        raise ValueError("Driver= appears more than once: give it once")
    driver = drivers[0].value
    if _SQL_SERVER_DRIVER.search(driver):
        _check_sql_server(driver, by_key)
    elif _POSTGRESQL_DRIVER.search(driver):
        _check_psqlodbc(by_key)
    else:
        raise ValueError(
            f"Driver={{{driver}}} is not a driver whose encryption options cm-remediate can "
            "check: use Driver={ODBC Driver 18 for SQL Server}"
        )


def _single(by_key: dict[str, list[Attribute]], keys: tuple[str, ...]) -> Attribute | None:
    """The one attribute among ``keys`` (aliases); refuse repeats and padding, which
    drivers resolve differently (first wins, last wins, ignored)."""
    found = [a for key in keys for a in by_key.get(key, [])]
    if not found:
        return None
    name = found[0].keyword
    if len(found) > 1:
        raise ValueError(f"{name} appears more than once: give it once")
    if found[0].padded:
        raise ValueError(
            f"{name}: remove the spaces around the keyword and its value (a driver may not "
            "recognise it as written, and fall back to its default)"
        )
    return found[0]


def _check_sql_server(driver: str, by_key: dict[str, list[Attribute]]) -> None:
    trust = _single(by_key, ("trustservercertificate",))
    if trust is not None and trust.value.lower() not in _TRUST_OFF:
        raise ValueError(
            f"{trust.keyword}={trust.value} turns off the check of the SQL Server "
            "certificate: remove it, and use the host name the certificate names in Server= "
            "(or HostNameInCertificate=), a certificate from a CA this machine trusts, or "
            "ServerCertificate= with the server's certificate file"
        )
    encrypt = _single(by_key, ("encrypt",))
    if encrypt is not None and encrypt.value.lower() not in _ENCRYPT_ON:
        raise ValueError(
            f"{encrypt.keyword}={encrypt.value} does not require an encrypted, verified "
            "connection: remove it (ODBC Driver 18 encrypts by default) or set Encrypt=yes "
            "(or strict)"
        )
    version = _ODBC_DRIVER_VERSION.match(driver.strip())
    if encrypt is None and (version is None or int(version.group(1)) < 18):
        raise ValueError(
            f"Driver={{{driver}}} does not encrypt by default: set Encrypt=yes, or use "
            "Driver={ODBC Driver 18 for SQL Server}"
        )


def _check_psqlodbc(by_key: dict[str, list[Attribute]]) -> None:
    sslmode = _single(by_key, _PSQLODBC_SSLMODE)
    if sslmode is None:
        raise ValueError(
            "SSLmode= is missing: psqlODBC does not encrypt by default; set "
            "SSLmode=verify-full (and the CA with pqopt={sslrootcert=/path/ca.pem})"
        )
    if sslmode.value != _VERIFY_FULL:
        raise ValueError(
            f"{sslmode.keyword}={sslmode.value} does not check the server certificate and "
            "its host name: set SSLmode=verify-full, in lower case (disable, allow, prefer "
            "and require check no certificate, verify-ca no host name)"
        )
    pqopt = _single(by_key, _PSQLODBC_PQOPT)
    if pqopt is None:
        return
    options = parse_conninfo(pqopt.value)
    for value in options.get("sslmode", []):
        if value != _VERIFY_FULL:
            raise ValueError(
                f"pqopt: sslmode={value} does not check the server certificate and its host "
                "name: remove it (SSLmode=verify-full says it)"
            )
    if "requiressl" in options:
        raise ValueError("pqopt: requiressl is an obsolete spelling of sslmode: remove it")


def through_tunnel(text: str, port: int) -> str:
    """The connection string with its server replaced by the loopback tunnel on ``port``,
    the certificate still checked against the host it named (SQL Server: ``Server=`` the
    tunnel, ``HostNameInCertificate=`` the host; psqlODBC: ``Server=127.0.0.1``, whose
    name the local stand-in's certificate carries, and ``Port=``). Raises ValueError for
    a server the tunnel cannot stand in for (a named instance needs SQL Browser)."""
    attributes = parse_odbc(text)
    keys = {a.key for a in attributes}
    driver = next((a.value for a in attributes if a.key == "driver"), "")
    loopback = "127.0.0.1"
    out: list[tuple[str, str]] = []
    if _SQL_SERVER_DRIVER.search(driver):
        for attribute in attributes:
            if attribute.key not in ("server", "address", "addr"):
                out.append((attribute.keyword, attribute.value))
                continue
            host = attribute.value.strip()
            host = host[4:] if host.lower().startswith("tcp:") else host
            host = host.split(",", 1)[0].strip()
            if "\\" in host:
                raise ValueError(
                    f"{attribute.keyword}= names an instance; through the relay SQL Server "
                    "needs a static port: Server=host,port"
                )
            out.append((attribute.keyword, f"tcp:{loopback},{port}"))
            if not keys & {"hostnameincertificate", "servercertificate"}:
                out.append(("HostNameInCertificate", host))
    else:
        for attribute in attributes:
            if attribute.key in ("server", "servername"):
                out.append((attribute.keyword, loopback))
            elif attribute.key == "port":
                continue
            else:
                out.append((attribute.keyword, attribute.value))
        out.append(("Port", str(port)))
    return ";".join(f"{keyword}={_odbc_value(value)}" for keyword, value in out)


def _odbc_value(value: str) -> str:
    """A value as ODBC reads it back: braced when it holds what would end it."""
    if any(c in value for c in ";{}= ") or not value:
        return "{" + value.replace("}", "}}") + "}"
    return value


# -- the storage account ---------------------------------------------------------------


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine (a storage emulator, never the network)."""
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


_STORAGE_ENDPOINTS: Final = ("blobendpoint", "queueendpoint", "tableendpoint", "fileendpoint")


def check_storage_tls(text: str) -> None:
    """Raise ValueError for a storage connection string that would send requests to a
    remote account without TLS. Plain HTTP is left to a local emulator (loopback)."""
    pairs: dict[str, str] = {}
    names: dict[str, str] = {}
    for part in text.split(";"):
        if "=" not in part:
            continue
        name, _, value = part.partition("=")
        pairs[name.strip().lower()] = value.strip()
        names[name.strip().lower()] = name.strip()
    if pairs.get("usedevelopmentstorage", "").lower() == "true":
        return  # the emulator on 127.0.0.1, by definition
    endpoints = {key: pairs[key] for key in _STORAGE_ENDPOINTS if key in pairs}
    for key, url in endpoints.items():
        parts = urlsplit(url)
        if parts.scheme.lower() != "https" and not is_loopback(parts.hostname):
            raise ValueError(
                f"{names[key]} must be an https:// URL (plain HTTP only for a storage "
                "emulator on this machine; TLS is never switched off)"
            )
    protocol = pairs.get("defaultendpointsprotocol", "https").lower()
    if protocol != "https" and not all(
        f"{service}endpoint" in endpoints for service in ("blob", "queue", "table")
    ):
        # The SDK builds the missing endpoints from the account name with this protocol.
        raise ValueError(
            f"{names.get('defaultendpointsprotocol', 'DefaultEndpointsProtocol')}="
            f"{pairs.get('defaultendpointsprotocol', '')} sends requests to the storage "
            "account without TLS: set DefaultEndpointsProtocol=https"
        )
