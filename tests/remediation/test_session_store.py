"""The stored AdminService session against Azurite: created once, replaced only at the
version that was read (two instances never lose a renewal to a race), overwritten by a
new sign-in whatever is there."""

from __future__ import annotations

import uuid

import pytest
from azure.storage.blob import BlobServiceClient

from devstack.azurite import Azurite
from shared.platform.session_store import BlobSessionStore

pytestmark = pytest.mark.stack


@pytest.fixture
def store(azurite: Azurite) -> BlobSessionStore:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.get_container_client(f"session-{uuid.uuid4().hex[:12]}")
    return BlobSessionStore(container, "adminservice-session.json")


def test_a_sign_in_creates_the_container_and_the_session(store):
    assert store.load() is None
    version = store.replace('{"first": 1}')
    stored = store.load()
    assert stored is not None and stored.text == '{"first": 1}' and stored.version == version
    assert "adminservice-session.json" in store.where and "first" not in store.where


def test_only_the_version_read_is_replaced(store):
    first = store.replace('{"n": 1}')
    assert store.save('{"n": 1}', None) is None  # create-only meets the existing one
    second = store.save('{"n": 2}', first)
    assert second is not None and second != first
    assert store.save('{"n": "stale"}', first) is None  # another instance renewed first
    stored = store.load()
    assert stored is not None and stored.text == '{"n": 2}' and stored.version == second
    third = store.replace('{"n": 3}')  # a new sign-in wins whatever is stored
    assert store.load().text == '{"n": 3}' and third != second
