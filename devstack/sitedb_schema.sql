-- Stand-in for the parts of a ConfigMgr site database (CM_<SiteCode>) that cm-remediate
-- reads, for PostgreSQL 15. Loaded by devstack/sitedb/ (schema.py) as the owner login.
--
-- Base tables have private snake_case names; the reader login only gets the views,
-- which carry ConfigMgr's documented names and column types. Identifiers are unquoted,
-- so PostgreSQL folds them to lower case and `SELECT RecordID FROM v_StatusMessage`
-- works exactly as on SQL Server (result column names come back lower case: read
-- columns by position).
--
-- Text semantics. ConfigMgr requires SQL_Latin1_General_CP1_CI_AS: comparisons are
-- case-insensitive, accent-sensitive, and `=` ignores trailing spaces. Two pieces
-- reproduce that here:
--   * the nondeterministic ICU collation `ci` (strength 2 = case-insensitive,
--     accent-sensitive) on every text column of the base tables;
--   * the views expose text columns as unbounded `bpchar` (character without a length,
--     so nothing is padded and values come back byte for byte), whose `=` ignores
--     trailing spaces on both sides. pyodbc sees `str` either way.
-- The base columns stay varchar(n) so the length limits are the real ones.
-- Caveats (both engines): ICU treats characters such as U+200B (zero-width space),
-- U+00AD (soft hyphen) and most C0 controls other than tab/CR/LF as ignorable, and
-- nondeterministic collations reject LIKE on PostgreSQL 15.

CREATE COLLATION ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

-- One sequence per site code is created on demand by devstack/sitedb/record_ids.py
-- (RecordID ranges are site-partitioned: site slot i starts at (i + 1) * 2^56). This table remembers them.
CREATE TABLE site_record_id_ranges (
    site_code     varchar(3) PRIMARY KEY,  -- upper case; deterministic on purpose
    slot          integer NOT NULL UNIQUE CHECK (slot >= 1 AND slot <= 126),
    sequence_name text NOT NULL UNIQUE
);

CREATE TABLE status_messages (
    record_id           bigint PRIMARY KEY,
    module_name         varchar(128) COLLATE ci NOT NULL,
    message_id          integer NOT NULL,
    severity            integer NOT NULL,
    message_type        integer NOT NULL,
    component           varchar(128) COLLATE ci NOT NULL,
    machine_name        varchar(128) COLLATE ci NOT NULL,
    site_code           varchar(3) COLLATE ci NOT NULL,
    -- SQL Server datetime: UTC by ConfigMgr convention, no zone, ~3 ms resolution.
    time_utc            timestamp(3) NOT NULL,
    process_id          integer,
    thread_id           integer,
    per_client          integer,
    win32_error         integer,
    top_level_site_code varchar(3) COLLATE ci
);
-- The export reads one MessageID of one site in RecordID order. The views compare
-- site_code as bpchar, so the index is on that expression (else it is never used).
CREATE INDEX status_messages_message_site_record
    ON status_messages (message_id, (site_code::bpchar), record_id);
CREATE INDEX status_messages_site_record ON status_messages ((site_code::bpchar), record_id);

CREATE TABLE status_message_ins_strings (
    record_id      bigint NOT NULL REFERENCES status_messages ON DELETE CASCADE,
    ins_str_index  integer NOT NULL CHECK (ins_str_index >= 0 AND ins_str_index <= 9),
    ins_str_value  varchar(512) COLLATE ci NOT NULL,
    PRIMARY KEY (record_id, ins_str_index)
);

CREATE TABLE status_message_attributes (
    record_id       bigint NOT NULL REFERENCES status_messages ON DELETE CASCADE,
    attribute_id    integer NOT NULL,
    attribute_value varchar(512) COLLATE ci NOT NULL,
    attribute_time  timestamp(3) NOT NULL,
    PRIMARY KEY (record_id, attribute_id)
);

CREATE TABLE systems (
    resource_id               integer PRIMARY KEY,
    resource_type             integer NOT NULL DEFAULT 5,
    name                      varchar(256) COLLATE ci,
    netbios_name              varchar(256) COLLATE ci,
    sms_unique_identifier     varchar(256) COLLATE ci,
    resource_domain_or_workgr varchar(256) COLLATE ci,
    full_domain_name          varchar(256) COLLATE ci,
    client                    integer,
    active                    integer,
    obsolete                  integer,
    decommissioned            integer,
    creation_date             timestamp(3),
    client_version            varchar(256) COLLATE ci,
    operating_system          varchar(256) COLLATE ci
);
CREATE INDEX systems_netbios_name ON systems ((netbios_name::bpchar));

-- The evaluated membership of collections (what collection evaluation writes), one row
-- per (collection, resource). Written by the AdminService simulator as it evaluates.
CREATE TABLE collection_members (
    collection_id varchar(8) COLLATE ci NOT NULL,
    resource_id   integer NOT NULL,
    resource_type integer NOT NULL DEFAULT 5,  -- 5 = System
    is_direct     integer NOT NULL CHECK (is_direct IN (0, 1)),
    name          varchar(256) COLLATE ci,
    site_code     varchar(3) COLLATE ci
);
-- One row per pair, and the index of "is this resource in that collection" (and of a
-- whole collection). The view compares collection_id as bpchar: the index is on that.
CREATE UNIQUE INDEX collection_members_collection_resource
    ON collection_members ((collection_id::bpchar), resource_id);

CREATE TABLE proxy_routings (
    id                     integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    external_endpoint_name varchar(256) COLLATE ci NOT NULL,
    external_url           varchar(2048) COLLATE ci NOT NULL,
    proxy_service_name     varchar(256) COLLATE ci
);

CREATE VIEW v_StatusMessage AS
SELECT record_id                   AS RecordID,
       module_name::bpchar         AS ModuleName,
       message_id                  AS MessageID,
       severity                    AS Severity,
       message_type                AS MessageType,
       component::bpchar           AS Component,
       machine_name::bpchar        AS MachineName,
       site_code::bpchar           AS SiteCode,
       time_utc                    AS Time,
       process_id                  AS ProcessID,
       thread_id                   AS ThreadID,
       per_client                  AS PerClient,
       win32_error                 AS Win32Error,
       top_level_site_code::bpchar AS TopLevelSiteCode
FROM status_messages;

CREATE VIEW v_StatMsgInsStrings AS
SELECT record_id             AS RecordID,
       ins_str_index         AS InsStrIndex,
       ins_str_value::bpchar AS InsStrValue
FROM status_message_ins_strings;

CREATE VIEW v_StatMsgAttributes AS
SELECT record_id               AS RecordID,
       attribute_id            AS AttributeID,
       attribute_value::bpchar AS AttributeValue,
       attribute_time          AS AttributeTime
FROM status_message_attributes;

-- The documented pivot. Scalar subqueries on the (record_id, index) key keep it cheap
-- for the usual "a range of RecordIDs" reads; NULL where the message has no string.
CREATE VIEW v_StatMsgWithInsStrings AS
SELECT m.RecordID, m.ModuleName, m.MessageID, m.Severity, m.MessageType, m.Component,
       m.MachineName, m.SiteCode, m.Time, m.ProcessID, m.ThreadID, m.PerClient,
       m.Win32Error, m.TopLevelSiteCode,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 0) AS InsString1,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 1) AS InsString2,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 2) AS InsString3,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 3) AS InsString4,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 4) AS InsString5,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 5) AS InsString6,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 6) AS InsString7,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 7) AS InsString8,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 8) AS InsString9,
       (SELECT s.ins_str_value::bpchar FROM status_message_ins_strings s
         WHERE s.record_id = m.RecordID AND s.ins_str_index = 9) AS InsString10
FROM v_StatusMessage m;

CREATE VIEW v_R_System AS
SELECT resource_id                       AS ResourceID,
       resource_type                     AS ResourceType,
       name::bpchar                      AS Name0,
       netbios_name::bpchar              AS Netbios_Name0,
       sms_unique_identifier::bpchar     AS SMS_Unique_Identifier0,
       resource_domain_or_workgr::bpchar AS Resource_Domain_OR_Workgr0,
       full_domain_name::bpchar          AS Full_Domain_Name0,
       client                            AS Client0,
       active                            AS Active0,
       obsolete                          AS Obsolete0,
       decommissioned                    AS Decommissioned0,
       creation_date                     AS Creation_Date0,
       client_version::bpchar            AS Client_Version0,
       operating_system::bpchar          AS Operating_System_Name_and0
FROM systems;

-- Flags are integers 0/1, as v_R_System exposes its flags (SQL Server: bit).
CREATE VIEW v_FullCollectionMembership AS
SELECT collection_id::bpchar AS CollectionID,
       resource_id           AS ResourceID,
       resource_type         AS ResourceType,
       name::bpchar          AS Name,
       site_code::bpchar     AS SiteCode,
       is_direct             AS IsDirect
FROM collection_members;

CREATE VIEW vProxy_Routings AS
SELECT id                             AS ID,
       external_endpoint_name::bpchar AS ExternalEndpointName,
       external_url::bpchar           AS ExternalUrl,
       proxy_service_name::bpchar     AS ProxyServiceName
FROM proxy_routings;
