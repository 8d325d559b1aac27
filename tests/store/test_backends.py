"""Which backend a store URL picks (DESIGN.md 3), without connecting to anything remote."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

import recorder
from recorder.store import backend_for, open_store, resolve_url


@pytest.fixture(autouse=True)
def no_store_env(monkeypatch, tmp_path):
    monkeypatch.delenv("RECORDER_STORE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.mark.parametrize("url", [
    "mongodb://localhost:27017/experiments",
    "mongodb://u:s3cretpw@db1.example.com,db2.example.com/exp?replicaSet=rs0",
    "mongodb+srv://u:s3cretpw@cluster0.example.mongodb.net/exp",
])
def test_mongodb_urls_go_to_pymongo_without_connecting(url, tmp_path):
    backend = backend_for(url)
    assert backend.kind == "mongodb"
    assert "s3cretpw" not in backend.url
    assert backend.url.split("://")[0] == url.split("://")[0]
    assert backend.spool_dir.parent == tmp_path / "cache" / "recorder" / "spool"
    assert backend_for(url).spool_dir == backend.spool_dir  # one folder per store ...
    assert backend_for("mongodb://elsewhere/x").spool_dir != backend.spool_dir  # ... and per store


def test_a_mongodb_url_password_is_masked():
    assert backend_for("mongodb://alice:s3cretpw@host/db").url == "mongodb://alice:***@host/db"


def test_mongomock_urls_share_a_database_per_name():
    name = uuid.uuid4().hex
    a, b = backend_for(f"mongomock://{name}-a"), backend_for(f"mongomock://{name}-b")
    assert a.kind == b.kind == "mongomock"
    db = a.connect()
    db["runs"].insert_one({"_id": 1})
    assert backend_for(f"mongomock://{name}-a").connect()["runs"].count_documents({}) == 1
    assert b.connect()["runs"].count_documents({}) == 0


def test_a_path_is_the_embedded_store(tmp_path):
    backend = backend_for(tmp_path / "runs")
    assert backend.kind == "embedded"
    assert backend.url == str(tmp_path / "runs")
    assert backend.spool_dir == tmp_path / "runs" / "spool"
    assert not (tmp_path / "runs").exists()  # nothing is created before it is used
    backend.connect()["runs"].insert_one({"_id": 1})
    assert (tmp_path / "runs").is_dir()
    store = open_store(str(tmp_path / "runs"))
    assert store.get_run(1) == {"_id": 1}
    store.db.client.close()


def test_a_relative_path_is_made_absolute_against_the_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    backend = backend_for("stores/a")
    assert backend.kind == "embedded"
    assert Path(backend.url) == tmp_path / "stores" / "a"


def test_a_file_url_is_the_embedded_store(tmp_path):
    backend = backend_for(f"file://{tmp_path}/runs")
    assert backend.kind == "embedded"
    assert backend.url == str(tmp_path / "runs")


def test_no_store_uses_recorder_store_from_the_environment(monkeypatch):
    monkeypatch.setenv("RECORDER_STORE", "mongomock://from-env")
    assert resolve_url(None) == "mongomock://from-env"
    assert backend_for(None).kind == "mongomock"
    assert backend_for("mongomock://explicit").url == "mongomock://explicit"  # argument wins


@pytest.mark.parametrize("env", [None, ""])
def test_no_store_and_no_environment_is_dot_recorder_in_the_cwd(env, tmp_path, monkeypatch):
    if env is not None:
        monkeypatch.setenv("RECORDER_STORE", env)
    monkeypatch.chdir(tmp_path)
    backend = backend_for(None)
    assert backend.kind == "embedded"
    assert backend.url == str(tmp_path / ".recorder")


def test_an_unknown_scheme_is_a_store_error_without_the_password():
    with pytest.raises(recorder.StoreError) as raised:
        backend_for("redis://u:s3cretpw@h/x")
    message = str(raised.value)
    assert "'redis'" in message
    assert "s3cretpw" not in message
    assert "mongodb://" in message  # says what would be accepted
    assert isinstance(raised.value, recorder.RecorderError)


@pytest.mark.parametrize("as_url", [False, True])
def test_a_path_that_is_a_file_is_a_store_error(tmp_path, as_url):
    path = tmp_path / "not-a-dir"
    path.write_text("x")
    with pytest.raises(recorder.StoreError, match="not a directory"):
        backend_for(f"file://{path}" if as_url else path)
