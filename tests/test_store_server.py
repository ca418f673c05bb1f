"""Qdrant server options and retries: the requests they produce (no server runs here) and that the
store still works against qdrant-client's local mode with them set."""

from __future__ import annotations

import uuid
from unittest import mock

import httpx
import numpy as np
import pytest
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from curate import config
from curate.cli.common import store_from
from curate.store import ServerOptions, StoreError
from curate.store.filters import Condition
from curate.store.remote import RemoteStore, is_transient
from curate.store.server_options import PAYLOAD_INDEXES


def _http(status: int) -> UnexpectedResponse:
    return UnexpectedResponse(status_code=status, reason_phrase="x", content=b"{}", headers=httpx.Headers())


def _data(n: int = 50, d: int = 4) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(0)
    ids = [str(uuid.UUID(bytes=rng.bytes(16), version=4)) for _ in range(n)]
    x = rng.standard_normal((n, d)).astype(np.float32)
    return ids, x / np.linalg.norm(x, axis=1, keepdims=True)


def _spied(options: ServerOptions | None) -> RemoteStore:
    store = RemoteStore(":memory:", options=options)
    store.client = mock.Mock(wraps=store.client)
    store.ensure_collection("pool")
    store.ensure_encoder("pool", "enc", {"dim": 4})
    return store


def test_cluster_options_reach_every_create_collection_and_indexes_cover_filtered_fields():
    store = _spied(ServerOptions(shards=6, replicas=2, write_consistency=2, on_disk=True))
    calls = {c.args[0]: c.kwargs for c in store.client.create_collection.call_args_list}
    assert set(calls) == {"pool", "pool__meta", "pool__v__enc"}
    for name, shards in (("pool", 6), ("pool__meta", 1), ("pool__v__enc", 6)):
        kw = calls[name]
        assert (kw["shard_number"], kw["replication_factor"], kw["write_consistency_factor"]) == (shards, 2, 2)
        assert kw["on_disk_payload"] is True
    assert calls["pool__v__enc"]["vectors_config"]["enc"].on_disk is True
    indexed = {(c.args[0], c.args[1], c.kwargs["field_schema"].value)
               for c in store.client.create_payload_index.call_args_list}
    assert indexed == {("pool", f, t) for f, t in PAYLOAD_INDEXES.items()}
    assert {"failed", "labeled", "selected_round", "is_duplicate", "dup_group", "sha256", "relpath"} <= set(
        PAYLOAD_INDEXES)
    # and the store still works with them (local mode accepts and ignores cluster options)
    ids, x = _data()
    store.upsert_points("pool", ids, [{"path": f"/p/{i}.jpg", "failed": i == 3} for i in range(len(ids))])
    store.upsert_vectors("pool", "enc", ids, x)
    got_ids, got = store.load_vectors("pool", "enc")
    assert got_ids == sorted(ids) and np.allclose(got, x[np.argsort(ids)], atol=1e-6)
    assert store.count("pool", [Condition("failed", "==", True)]) == 1




def test_default_options_send_no_cluster_arguments():
    store = _spied(None)
    for c in store.client.create_collection.call_args_list:
        assert not {"shard_number", "replication_factor", "write_consistency_factor", "on_disk_payload"} & set(c.kwargs)
    assert store.client.create_collection.call_args_list[-1].kwargs["vectors_config"]["enc"].on_disk is None


class Flaky:
    """A client whose upserts fail with the given errors first; `apply_first` writes before the first
    failure (the acknowledgement is lost, as when a node dies after applying a batch)."""

    def __init__(self, real, errors: list[BaseException], apply_first: bool = False) -> None:
        self.real, self.errors, self.apply_first, self.upserts = real, list(errors), apply_first, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def upsert(self, *args, **kwargs):
        self.upserts += 1
        if self.errors:
            if self.apply_first and self.upserts == 1:
                self.real.upsert(*args, **kwargs)
            raise self.errors.pop(0)
        return self.real.upsert(*args, **kwargs)


def _flaky_store(errors, apply_first=False) -> tuple[RemoteStore, Flaky, list[float]]:
    store = RemoteStore(":memory:")
    store.ensure_collection("pool")
    store.ensure_encoder("pool", "enc", {"dim": 4})
    sleeps: list[float] = []
    store._sleep = sleeps.append
    store.client = Flaky(store.client, errors, apply_first)
    return store, store.client, sleeps


def test_transient_failures_are_retried_with_backoff_and_a_resent_batch_counts_once():
    lost_ack = ResponseHandlingException(httpx.ReadTimeout("timed out"))
    store, client, sleeps = _flaky_store([lost_ack, _http(503)], apply_first=True)
    ids, x = _data()
    store.upsert_vectors("pool", "enc", ids, x)
    assert client.upserts == 3 and len(sleeps) == 2 and sleeps[1] > sleeps[0]
    assert store.count_vectors("pool", "enc") == len(ids)
    assert np.allclose(store.get_vectors("pool", "enc", ids), x, atol=1e-6)


def test_a_client_error_fails_at_once_and_persistent_outage_gives_up():
    store, client, sleeps = _flaky_store([_http(400)])
    ids, x = _data()
    with pytest.raises(StoreError, match="refused the request: 400"):
        store.upsert_vectors("pool", "enc", ids, x)
    assert client.upserts == 1 and sleeps == []
    assert store.count_vectors("pool", "enc") == 0

    store, client, sleeps = _flaky_store([ConnectionError("refused")] * 10)
    with pytest.raises(StoreError, match="failed 6 times"):
        store.upsert_points("pool", ids, [{}] * len(ids))
    assert client.upserts == 6 and len(sleeps) == 5


@pytest.mark.parametrize(("error", "transient"), [
    (_http(500), True), (_http(503), True), (_http(429), True), (_http(400), False), (_http(404), False),
    (_http(401), False), (ResponseHandlingException(httpx.ConnectError("x")), True), (TimeoutError(), True),
    (httpx.ReadTimeout("x"), True), (ValueError("bad"), False),
])
def test_is_transient(error, transient):
    assert is_transient(error) is transient


def test_settings_resolve_server_options_from_env_and_toml(tmp_path, monkeypatch):
    toml = tmp_path / "curate.toml"
    toml.write_text("shards = 4\nreplicas = 2\non_disk = true\n")
    monkeypatch.setenv("CURATE_REPLICAS", "3")
    s = config.resolve(toml)
    assert s.server_options == ServerOptions(shards=4, replicas=3, write_consistency=None, on_disk=True)
    monkeypatch.setenv("CURATE_WRITE_CONSISTENCY", "4")
    with pytest.raises(ValueError, match="write_consistency = 4 exceeds replicas = 3"):
        config.resolve(toml)
    monkeypatch.delenv("CURATE_WRITE_CONSISTENCY")
    monkeypatch.setenv("CURATE_ON_DISK", "maybe")
    with pytest.raises(ValueError, match="CURATE_ON_DISK: on_disk = 'maybe' must be true or false"):
        config.resolve(toml)
    monkeypatch.delenv("CURATE_ON_DISK")
    toml.write_text('shards = "many"\n')
    with pytest.raises(ValueError, match="shards = 'many' must be a whole number"):
        config.resolve(toml)
    monkeypatch.delenv("CURATE_REPLICAS")
    assert config.resolve(tmp_path / "none.toml").server_options.is_default


def test_embedded_store_ignores_server_options_with_a_note(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CURATE_SHARDS", "3")
    s = config.resolve(tmp_path / "none.toml", store=str(tmp_path / "store"))
    with store_from(s, create=True) as store:
        store.ensure_collection("pool")
    assert "embedded store ignores them" in capsys.readouterr().err
