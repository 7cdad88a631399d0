"""Constants shared by several test modules."""

#: AdminService settings for tests that never call it (the export): valid, unreachable.
UNREACHABLE_ADMINSERVICE = {
    "ADMINSERVICE_URL": "https://127.0.0.1:9/AdminService",
    "ENTRA_AUTHORITY_HOST": "https://127.0.0.1:9",
    "ENTRA_TENANT_ID": "00000000-0000-0000-0000-0000000000aa",
    "ENTRA_CLIENT_ID": "00000000-0000-0000-0000-0000000000bb",
    "ADMINSERVICE_USERNAME": "svc-cmremediate@contoso.example",
    "ADMINSERVICE_PASSWORD": "not-used-by-export-tests",
}
