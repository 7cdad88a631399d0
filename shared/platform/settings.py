"""The app's settings: one model, read from app settings / environment variables.

The setting names are a contract with operators, the Bicep templates and
`local.settings.json`; the model's aliases are those names.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import SettingsConfigDict

from shared.errors import ConfigurationError
from shared.platform.connection_strings import check_site_db_tls, check_storage_tls
from shared.platform.raw_settings import (
    DEFAULT_APP_ROOT,
    FILE_SETTINGS,
    SITE_DB_MISSING,
    STORAGE_MISSING,
    app_path,
    file_problems,
    site_database_needed,
    storage_given,
    unreadable,
)
from shared.platform.relay_settings import RelaySettings
from shared.platform.session_settings import SessionSettings

_QUEUE_NAME = re.compile(r"^(?=.{3,56}$)[a-z0-9](?:[a-z0-9]|-(?!-))*[a-z0-9]$")
_NCRONTAB_FIELD = re.compile(r"^[0-9A-Za-z*/,\-?]+$")


class Settings(RelaySettings, SessionSettings):
    """Every setting cm-remediate reads, with its default and validation."""

    model_config = SettingsConfigDict(
        extra="ignore",
        populate_by_name=False,
        validate_default=True,
        frozen=True,
    )

    site_db_connection: SecretStr | None = Field(
        default=None,
        alias="SITE_DB_CONNECTION",
        description="ODBC connection string of the site database (ODBC Driver 18 for SQL "
        "Server, SQL authentication). Always encrypted and verified: TrustServerCertificate=yes "
        "and Encrypt=no/optional are refused, as is a driver whose encryption cannot be checked. "
        "Required unless EXPORT_SOURCE and IDENTITY_SOURCE are both adminservice. The SQL login "
        "needs SELECT on v_StatusMessage, v_StatMsgInsStrings, v_R_System and "
        "v_FullCollectionMembership: the health check reads one row of each.",
    )
    export_source: Literal["sitedb", "adminservice"] = Field(
        default="sitedb",
        alias="EXPORT_SOURCE",
        description="Where the export reads status messages: the site database over SQL, or "
        "the SMS Provider's WMI classes through the AdminService (HTTPS to the cloud "
        "management gateway only; IDENTITY_SOURCE then defaults to adminservice).",
    )
    storage_connection: SecretStr | None = Field(
        default=None,
        alias="AzureWebJobsStorage",
        description="Storage account connection string (queue and exporter state). "
        "Alternatively the identity-based AzureWebJobsStorage__* settings. HTTPS only "
        "(plain HTTP only for an emulator on this machine).",
    )
    storage_account_name: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsStorage__accountName"),
        description="Identity-based storage: the account name.",
    )
    storage_blob_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsStorage__blobServiceUri"),
        description="Identity-based storage: the blob service URI.",
    )
    storage_queue_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsStorage__queueServiceUri"),
        description="Identity-based storage: the queue service URI.",
    )
    storage_table_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsStorage__tableServiceUri"),
        description="Identity-based storage: the table service URI.",
    )
    storage_client_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AzureWebJobsStorage__clientId"),
        description="Identity-based storage: client ID of the user-assigned managed identity.",
    )
    remediation_queue: str = Field(
        default="cm-remediation",
        alias="REMEDIATION_QUEUE",
        description="Name of the storage queue between the exporter and the remediation.",
    )
    export_schedule: str = Field(
        default="0 */5 * * * *",
        alias="EXPORT_SCHEDULE",
        description="NCRONTAB schedule (with seconds) of the export timer.",
    )
    rules_file: str = Field(
        default="rules.json",
        alias="REMEDIATION_RULES_FILE",
        description="Path of the rules file, relative to the app root.",
    )
    export_start_time: datetime | None = Field(
        default=None,
        alias="EXPORT_START_TIME",
        description="ISO-8601 UTC; a first run exports messages from here on "
        "(unset: everything still in the database, which keeps status messages only as long "
        "as the site's status filter rules say).",
    )
    export_overlap_minutes: int = Field(
        default=10,
        ge=0,
        le=1440,
        alias="EXPORT_OVERLAP_MINUTES",
        description="How far back each run re-reads to catch rows that commit late.",
    )
    export_max_messages_per_run: int = Field(
        default=50_000,
        ge=1,
        le=1_000_000,
        alias="EXPORT_MAX_MESSAGES_PER_RUN",
        description="Bound on the status messages one export run reads; the rest waits.",
    )
    adminservice_url: str | None = Field(
        default=None,
        alias="ADMINSERVICE_URL",
        description="AdminService base URL ending in /AdminService or /AdminService_TokenAuth. "
        "Through the cloud management gateway with a token: "
        "https://<CMG>/CCM_Proxy_ServerAuth/<id>/AdminService, which is community practice "
        "(*unverified*: Microsoft documents only the client-certificate form "
        "CCM_Proxy_MutualAuth/<id>/AdminService, and vProxy_Routings, where the <id> is read, "
        "is undocumented).",
    )
    adminservice_scope: str = Field(
        default="https://ConfigMgrService/user_impersonation",
        alias="ADMINSERVICE_SCOPE",
        description="Scope of the AdminService token (the ConfigMgr server app's scope).",
    )
    adminservice_request_refresh: bool = Field(
        default=False,
        alias="ADMINSERVICE_REQUEST_REFRESH",
        description="Ask for a collection evaluation after changes: at most once per "
        "collection per batch, never per device. Expensive for the site; off by default.",
    )
    entra_authority_host: str = Field(
        default="https://login.microsoftonline.com",
        alias="ENTRA_AUTHORITY_HOST",
        description="Entra ID authority host.",
    )
    entra_tenant_id: str | None = Field(
        default=None, alias="ENTRA_TENANT_ID", description="Entra ID tenant (directory) ID."
    )
    entra_client_id: str | None = Field(
        default=None,
        alias="ENTRA_CLIENT_ID",
        description="Application (client) ID of cm-remediate's app registration.",
    )
    adminservice_username: str | None = Field(
        default=None,
        alias="ADMINSERVICE_USERNAME",
        description="UPN of the synced service account that is a ConfigMgr administrative user.",
    )
    adminservice_password: SecretStr | None = Field(
        default=None,
        alias="ADMINSERVICE_PASSWORD",
        description="Password of the service account (a Key Vault reference in Azure).",
    )
    entra_client_secret: SecretStr | None = Field(
        default=None,
        alias="ENTRA_CLIENT_SECRET",
        description="Client secret of the app registration (ENTRA_CLIENT_ID). AdminService "
        "(a rule targets adminservice, or EXPORT_SOURCE or IDENTITY_SOURCE is adminservice): "
        "when set, the service account's username/password (ROPC) token request is made as a "
        "confidential client with this secret; needed when the app registration does not allow "
        "public client flows. WEBSERVICE_KIND=rest: the app-only (client credentials) "
        "credential; it wins over ENTRA_CLIENT_CERTIFICATE_PATH when both are set.",
    )
    entra_client_certificate_path: Path | None = Field(
        default=None,
        alias="ENTRA_CLIENT_CERTIFICATE_PATH",
        description="PEM file with the private key and certificate: the app-only credential "
        "of WEBSERVICE_KIND=rest when ENTRA_CLIENT_SECRET is unset. Not used for the "
        "AdminService.",
    )
    webservice_kind: Literal["configmgr-webservice", "rest"] | None = Field(
        default=None,
        alias="WEBSERVICE_KIND",
        description="configmgr-webservice (the community SOAP service) or rest.",
    )
    webservice_url: str | None = Field(
        default=None, alias="WEBSERVICE_URL", description="URL of the web service target."
    )
    webservice_secret: SecretStr | None = Field(
        default=None,
        alias="WEBSERVICE_SECRET",
        description="Pre-shared secret of the ConfigMgr WebService.",
    )
    webservice_scope: str | None = Field(
        default=None,
        alias="WEBSERVICE_SCOPE",
        description="Scope of the app-only token for WEBSERVICE_KIND=rest.",
    )
    identity_source: Literal["sitedb", "adminservice"] | None = Field(
        default=None,
        alias="IDENTITY_SOURCE",
        description="Where machine names become ResourceIDs and collection membership is "
        "read: v_R_System and v_FullCollectionMembership (sitedb) or SMS_R_System and "
        "SMS_FullCollectionMembership (adminservice). Default: the EXPORT_SOURCE.",
    )
    resolve_retry_hours: float = Field(
        default=24,
        gt=0,
        le=24 * 30,
        alias="RESOLVE_RETRY_HOURS",
        description="Give up on an unknown device this long after its status message.",
    )
    resolve_retry_delay_seconds: int = Field(
        default=900,
        ge=1,
        le=7 * 24 * 3600,
        alias="RESOLVE_RETRY_DELAY_SECONDS",
        description="Wait before trying an unknown device again.",
    )
    max_adds_per_collection_per_hour: int = Field(
        default=1000,
        ge=1,
        le=20_000,
        alias="MAX_ADDS_PER_COLLECTION_PER_HOUR",
        description=(
            "Blast-radius guard: adds to one collection in any 60 minutes (a rule's "
            "max_adds_per_hour overrides it); past it, adds are held (held-rate-limit) "
            "until `cmremediate held release`."
        ),
    )
    adminservice_max_concurrency: int = Field(
        default=16,
        ge=1,
        le=256,
        alias="ADMINSERVICE_MAX_CONCURRENCY",
        description=(
            "AdminService calls one instance makes at once, at most (the SMS Provider "
            "serves every console too): with the instance count, the most the site sees."
        ),
    )
    membership_claim_hours: int = Field(
        default=24,
        ge=1,
        le=720,
        alias="MEMBERSHIP_CLAIM_HOURS",
        description=(
            "How long cm-remediate's own record of an add stands in for the device's "
            "membership (the site evaluates the collection meanwhile): another status "
            "message for the same device and collection is already-member without a call."
        ),
    )
    tls_ca_bundle: Path | None = Field(
        default=None,
        alias="TLS_CA_BUNDLE",
        description="Extra trusted CA certificates (PEM) for every outbound HTTPS call; adds "
        "to the system CAs. Nothing switches certificate checks off: REQUESTS_CA_BUNDLE, "
        "SSL_CERT_FILE and proxy variables are ignored.",
    )
    dry_run: bool = Field(
        default=False,
        alias="DRY_RUN",
        description="true: decide and record outcomes, change nothing.",
    )
    app_root: Path = Field(
        default=DEFAULT_APP_ROOT,
        alias="AzureWebJobsScriptRoot",
        description="Set by the Functions host; the directory of function_app.py.",
    )

    @field_validator("site_db_connection")
    @classmethod
    def _odbc_connection_string(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        text = value.get_secret_value().strip()
        if not text:
            raise ValueError("is empty")
        if "=" not in text:
            raise ValueError(
                "is not an ODBC connection string (expected key=value pairs such as "
                "'Driver={ODBC Driver 18 for SQL Server};Server=sql01,1433;...')"
            )
        check_site_db_tls(text)  # its messages name keywords, never the password
        return value

    @field_validator("storage_connection")
    @classmethod
    def _storage_tls(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            check_storage_tls(value.get_secret_value())
        return value

    @field_validator("remediation_queue")
    @classmethod
    def _queue_name(cls, value: str) -> str:
        if not _QUEUE_NAME.match(value):
            raise ValueError(
                f"{value!r} is not a valid queue name: 3-56 characters (so that "
                "'<name>-poison' fits in 63), lower-case letters, digits and single hyphens, "
                "starting and ending with a letter or digit"
            )
        return value

    @field_validator("export_schedule")
    @classmethod
    def _ncrontab(cls, value: str) -> str:
        fields = value.split()
        if len(fields) != 6 or not all(_NCRONTAB_FIELD.match(f) for f in fields):
            raise ValueError(
                f"{value!r} is not an NCRONTAB expression with six fields "
                "'{second} {minute} {hour} {day} {month} {day-of-week}', e.g. '0 */5 * * * *'"
            )
        return value

    @field_validator("export_start_time")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)

    @field_validator("adminservice_url")
    @classmethod
    def _adminservice_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        if not url.lower().startswith("https://"):
            raise ValueError("must be an https:// URL (TLS is never switched off)")
        if not url.lower().endswith(("/adminservice", "/adminservice_tokenauth")):
            raise ValueError(
                f"{value!r} must end in /AdminService (through the cloud management gateway: "
                "https://<CMG>/CCM_Proxy_ServerAuth/<id>/AdminService) or /AdminService_TokenAuth"
            )
        return url + "/"

    @field_validator(
        "entra_authority_host",
        "webservice_url",
        "storage_blob_uri",
        "storage_queue_uri",
        "storage_table_uri",
    )
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.strip().lower().startswith("https://"):
            raise ValueError("must be an https:// URL (TLS is never switched off)")
        return value.strip().rstrip("/") if value is not None else None

    @model_validator(mode="after")
    def _site_database_configured(self) -> Settings:
        if self.site_db_connection is None and self.reads_site_database:
            raise ValueError(SITE_DB_MISSING)
        return self

    @property
    def identity(self) -> Literal["sitedb", "adminservice"]:
        """Where machine names become ResourceIDs (IDENTITY_SOURCE, else EXPORT_SOURCE)."""
        return self.identity_source or self.export_source

    @property
    def reads_site_database(self) -> bool:
        """Whether the export or the identity lookup reads the site database over SQL."""
        return "sitedb" in (self.export_source, self.identity)

    @model_validator(mode="after")
    def _storage_configured(self) -> Settings:
        if self.storage_connection is None and not (
            self.storage_account_name or self.storage_queue_uri
        ):
            raise ValueError(STORAGE_MISSING)
        if self.storage_connection is not None and not self.storage_connection.get_secret_value():
            raise ValueError("AzureWebJobsStorage: is empty")
        for name, alias in FILE_SETTINGS:
            path: Path | None = getattr(self, name)
            if path is None:
                continue
            resolved = app_path(self.app_root, path)
            problem = unreadable(alias, resolved)
            if problem:
                raise ValueError(problem)
            object.__setattr__(self, name, resolved)  # frozen model: set once, here
        return self

    @property
    def rules_path(self) -> Path:
        """The rules file, resolved against the app root."""
        return app_path(self.app_root, self.rules_file)

    @property
    def export_overlap(self) -> timedelta:
        """EXPORT_OVERLAP_MINUTES as a duration."""
        return timedelta(minutes=self.export_overlap_minutes)

    @property
    def state_container(self) -> str:
        """Blob container of the exporter's state; named after the queue, so two
        deployments sharing a storage account keep separate watermarks."""
        return f"{self.remediation_queue}-state"

    @property
    def poison_queue(self) -> str:
        """Where the Functions host moves messages that failed maxDequeueCount times."""
        return f"{self.remediation_queue}-poison"


def setting_name(name: str, field: FieldInfo) -> str:
    """The name operators set (the environment variable) of a model field."""
    alias = field.validation_alias or field.alias or name
    return str(alias.choices[0]) if isinstance(alias, AliasChoices) else str(alias)


#: Every setting, by the name operators set, → its model field.
SETTING_FIELDS = {setting_name(name, field): name for name, field in Settings.model_fields.items()}


def _describe(error: ValidationError, values: Mapping[str, str]) -> list[str]:
    lines = []
    for item in error.errors():
        name = ".".join(str(part) for part in item["loc"]) or "settings"
        message = item["msg"]
        if item["type"] == "missing":
            message = "required setting is missing"
        message = message.removeprefix("Value error, ")
        # The model-level check already names its setting.
        lines.append(message if name == "settings" else f"{name}: {message}")
    # The whole-model checks do not run when a field fails; report them anyway.
    if site_database_needed(values) and SITE_DB_MISSING not in lines:
        lines.insert(0, SITE_DB_MISSING)
    if not storage_given(values) and not any(
        line.startswith("AzureWebJobsStorage:") for line in lines
    ):
        lines.append(STORAGE_MISSING)
    lines += [problem for problem in file_problems(values) if problem not in lines]
    return lines


def load_settings(values: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the settings; raise ConfigurationError naming every bad one.

    ``values`` replaces the environment (tests, ``--settings local.settings.json``).
    """
    try:
        if values is None:
            return Settings()  # the environment fills the required fields
        return Settings.model_validate(dict(values))
    except ValidationError as error:
        problems = _describe(error, os.environ if values is None else values)
    # Raised outside the handler: the ValidationError (which quotes every input value,
    # secrets too) must not travel along as the new exception's __context__.
    raise ConfigurationError.of_settings(problems)
