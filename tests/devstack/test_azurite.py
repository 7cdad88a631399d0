"""Azurite through the same SDKs the function app uses: what the app relies on works.

Also measures queue send rates (printed, never asserted: machines differ).
"""

from __future__ import annotations

import base64
import binascii
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from azure.core import MatchConditions
from azure.core.exceptions import (
    HttpResponseError,
    ResourceExistsError,
    ResourceModifiedError,
    ResourceNotFoundError,
)
from azure.data.tables import TableServiceClient, UpdateMode
from azure.storage.blob import BlobServiceClient
from azure.storage.queue import (
    QueueClient,
    QueueServiceClient,
    TextBase64DecodePolicy,
    TextBase64EncodePolicy,
)

from devstack.azurite import ACCOUNT_NAME, Azurite

pytestmark = pytest.mark.stack


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Azurite]:
    # Logs under pytest's basetemp outlive the run (the last 3 are kept) for diagnosis.
    with Azurite(log_dir=tmp_path_factory.mktemp("azurite-log")) as server:
        yield server


def _name(prefix: str) -> str:
    # Queue, container and table names: lower case letters and digits (tables: no dashes).
    return f"{prefix}{uuid.uuid4().hex[:12]}"


def _queue(conn: str, name: str, *, encoded: bool = True) -> QueueClient:
    if encoded:
        return QueueClient.from_connection_string(
            conn,
            name,
            message_encode_policy=TextBase64EncodePolicy(),
            message_decode_policy=TextBase64DecodePolicy(),
        )
    return QueueClient.from_connection_string(conn, name)


def test_connection_string_names_the_ports(azurite: Azurite) -> None:
    conn = azurite.connection_string
    assert "UseDevelopmentStorage" not in conn
    assert f"AccountName={ACCOUNT_NAME};" in conn
    assert f"QueueEndpoint=http://127.0.0.1:{azurite.queue_port}/{ACCOUNT_NAME};" in conn
    assert f"BlobEndpoint=http://127.0.0.1:{azurite.blob_port}/{ACCOUNT_NAME};" in conn
    assert f"TableEndpoint=http://127.0.0.1:{azurite.table_port}/{ACCOUNT_NAME};" in conn
    assert len({azurite.blob_port, azurite.queue_port, azurite.table_port}) == 3
    assert azurite.log_path.is_file()


def test_queue_message_is_base64_on_the_wire(azurite: Azurite) -> None:
    name = _name("q")
    queue = _queue(azurite.connection_string, name)
    queue.create_queue()
    body = '{"resource_id": 16777220, "step": "Install \u2013 \u00fcn\u00efcode"}'
    queue.send_message(body)

    # What the Functions host sees by default: base64 text in the stored message.
    raw = _queue(azurite.connection_string, name, encoded=False).peek_messages()
    assert len(raw) == 1
    stored = raw[0].content
    assert isinstance(stored, str)
    assert stored != body
    try:
        decoded = base64.b64decode(stored, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError) as exc:
        pytest.fail(f"stored message is not base64 UTF-8 text: {stored!r} ({exc})")
    assert decoded == body

    received = queue.receive_message(visibility_timeout=30)
    assert received is not None
    assert received.content == body
    assert received.dequeue_count == 1
    queue.delete_message(received)
    assert queue.receive_message() is None


def test_queue_time_to_live_minus_one_never_expires(azurite: Azurite) -> None:
    queue = _queue(azurite.connection_string, _name("ttl"))
    queue.create_queue()
    sent = queue.send_message("forever", time_to_live=-1)
    assert sent.expires_on is not None
    # -1 means "never": Azure reports 9999-12-31 as the expiry.
    assert sent.expires_on.year == 9999
    (peeked,) = queue.peek_messages()
    assert peeked.content == "forever"


def test_blob_etag_conditional_overwrite(azurite: Azurite) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(_name("c"))
    blob = container.get_blob_client("state.json")

    first = blob.upload_blob(b'{"v": 1}')
    etag1 = first["etag"]
    assert blob.download_blob().readall() == b'{"v": 1}'

    second = blob.upload_blob(
        b'{"v": 2}', overwrite=True, etag=etag1, match_condition=MatchConditions.IfNotModified
    )
    assert second["etag"] != etag1

    # Somebody else wrote in between: the stale ETag must lose.
    with pytest.raises(ResourceModifiedError):
        blob.upload_blob(
            b'{"v": 3}', overwrite=True, etag=etag1, match_condition=MatchConditions.IfNotModified
        )
    props = blob.get_blob_properties()
    assert props.etag == second["etag"]
    assert blob.download_blob().readall() == b'{"v": 2}'


def test_blob_create_only_with_if_none_match_star(azurite: Azurite) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(_name("c"))
    blob = container.get_blob_client("marker")

    blob.upload_blob(b"first", overwrite=True, if_none_match="*")
    # As on Azure: 409 BlobAlreadyExists, not 412, when the blob is there.
    with pytest.raises(ResourceExistsError) as excinfo:
        blob.upload_blob(b"second", overwrite=True, if_none_match="*")
    assert excinfo.value.status_code == 409
    assert "BlobAlreadyExists" in str(excinfo.value)
    # The SDK's spelling of the same condition.
    with pytest.raises(ResourceExistsError):
        blob.upload_blob(b"third", overwrite=True, match_condition=MatchConditions.IfMissing)
    assert blob.download_blob().readall() == b"first"


def test_blob_lease_acquire_renew_release(azurite: Azurite) -> None:
    service = BlobServiceClient.from_connection_string(azurite.connection_string)
    container = service.create_container(_name("c"))
    blob = container.get_blob_client("lock")
    blob.upload_blob(b"")

    lease = blob.acquire_lease(lease_duration=15)
    assert blob.get_blob_properties().lease.state == "leased"

    # A second holder is refused while the lease is active.
    with pytest.raises(HttpResponseError) as excinfo:
        blob.acquire_lease(lease_duration=15)
    assert excinfo.value.status_code == 409

    # Writes need the lease id.
    with pytest.raises(HttpResponseError) as excinfo:
        blob.upload_blob(b"x", overwrite=True)
    assert excinfo.value.status_code == 412
    blob.upload_blob(b"x", overwrite=True, lease=lease)

    lease.renew()
    lease.release()
    assert blob.get_blob_properties().lease.state == "available"
    blob.upload_blob(b"y", overwrite=True)


def test_table_entity_conditional_update(azurite: Azurite) -> None:
    tables = TableServiceClient.from_connection_string(azurite.connection_string)
    table = tables.create_table(_name("t"))
    created = table.create_entity({"PartitionKey": "site", "RowKey": "16777220", "attempts": 1})
    etag1 = created["etag"]

    entity = table.get_entity("site", "16777220")
    assert entity["attempts"] == 1
    assert entity.metadata["etag"] == etag1

    entity["attempts"] = 2
    updated = table.update_entity(
        entity, mode=UpdateMode.REPLACE, etag=etag1, match_condition=MatchConditions.IfNotModified
    )
    assert updated["etag"] != etag1

    entity["attempts"] = 3
    with pytest.raises(ResourceModifiedError):
        table.update_entity(
            entity,
            mode=UpdateMode.MERGE,
            etag=etag1,
            match_condition=MatchConditions.IfNotModified,
        )
    assert table.get_entity("site", "16777220")["attempts"] == 2

    with pytest.raises(ResourceExistsError):
        table.create_entity({"PartitionKey": "site", "RowKey": "16777220"})


def test_restart_with_persistent_dir_keeps_data(tmp_path: Path) -> None:
    with Azurite(persistent_dir=tmp_path / "data", log_dir=tmp_path / "log") as server:
        ports = (server.blob_port, server.queue_port, server.table_port)
        conn = server.connection_string
        queue = _queue(conn, "survivors")
        queue.create_queue()
        queue.send_message("still here")
        blobs = BlobServiceClient.from_connection_string(conn)
        blobs.create_container("keep").upload_blob("b", b"kept")
        first_pid = server.pid

        server.restart()

        assert server.pid != first_pid
        assert (server.blob_port, server.queue_port, server.table_port) == ports
        assert server.connection_string == conn
        # The old clients still work: same endpoints.
        (message,) = queue.peek_messages()
        assert message.content == "still here"
        assert blobs.get_blob_client("keep", "b").download_blob().readall() == b"kept"


def test_restart_without_persistent_dir_loses_data() -> None:
    with Azurite() as server:
        QueueServiceClient.from_connection_string(server.connection_string).create_queue("gone")
        server.restart()
        with pytest.raises(ResourceNotFoundError):
            _queue(server.connection_string, "gone").get_queue_properties()


def test_queue_send_rate(azurite: Azurite, capsys: pytest.CaptureFixture[str]) -> None:
    """Print queue messages/s one by one and with 8 threads (informational only)."""
    queue = _queue(azurite.connection_string, _name("rate"))
    queue.create_queue()
    queue.send_message("warm-up")

    serial_n = 300
    began = time.perf_counter()
    for i in range(serial_n):
        queue.send_message(f"serial {i}")
    serial_rate = serial_n / (time.perf_counter() - began)

    # One client per thread: what eight concurrent function invocations would do.
    threads, per_thread = 8, 150
    clients = [_queue(azurite.connection_string, queue.queue_name) for _ in range(threads)]

    def send_batch(client: QueueClient) -> None:
        for i in range(per_thread):
            client.send_message(f"parallel {i}")

    began = time.perf_counter()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(send_batch, clients))
    parallel_rate = threads * per_thread / (time.perf_counter() - began)

    props = queue.get_queue_properties()
    assert props.approximate_message_count == 1 + serial_n + threads * per_thread
    with capsys.disabled():
        print(
            f"\nAzurite queue send rate: {serial_rate:.0f} msg/s one by one, "
            f"{parallel_rate:.0f} msg/s with {threads} threads"
        )
