"""What the site database holds and who may read it: schema, logins, views, grants.

``sitedb_schema.sql`` (beside this package, shipped as package data) gives the
database ConfigMgr's view names, column types and case-insensitive text. The owner
login loads data; the reader login may only SELECT the ``v_`` views and
``vProxy_Routings``, read-only, like the least-privilege SQL login in production.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

SCHEMA_PATH: Final = Path(__file__).resolve().parent.parent / "sitedb_schema.sql"

ADMIN_LOGIN: Final = "cm_admin"
READER_LOGIN: Final = "cm_reader"
#: What the reader login may SELECT: the documented views, nothing else.
READER_VIEWS: Final = (
    "v_StatusMessage",
    "v_StatMsgInsStrings",
    "v_StatMsgAttributes",
    "v_StatMsgWithInsStrings",
    "v_R_System",
    "v_FullCollectionMembership",
    "vProxy_Routings",
)
#: Base tables behind the views (the reader login must not read them).
BASE_TABLES: Final = (
    "status_messages",
    "status_message_ins_strings",
    "status_message_attributes",
    "systems",
    "collection_members",
    "proxy_routings",
    "site_record_id_ranges",
)


def setup_script() -> str:
    """The psql script that creates the reader login and the database, loads the schema
    and grants the reader its views. Values come as psql variables: ``dbname``,
    ``reader``, ``reader_password`` and ``schema`` (the path of SCHEMA_PATH)."""
    grants = "\n".join(f'GRANT SELECT ON {view} TO :"reader";' for view in READER_VIEWS)
    return f"""
CREATE ROLE :"reader" LOGIN PASSWORD :'reader_password';
-- Read-only at the session level too, like a login that only has db_datareader-ish rights.
ALTER ROLE :"reader" SET default_transaction_read_only = on;
CREATE DATABASE :"dbname";
REVOKE ALL ON DATABASE :"dbname" FROM PUBLIC;
GRANT CONNECT ON DATABASE :"dbname" TO :"reader";
\\connect :"dbname"
\\i :schema
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO :"reader";
{grants}
"""
