"""LocalStore: keyed, atomic writes confined to one folder."""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys

import pytest

from harvest.storage import WRITING, WRITING_MARKER, LocalStore, StorageError, open_store


@pytest.fixture
def store(tmp_path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def all_files(root) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_put_then_get_round_trips(store):
    store.put("images/goldfish/abc.jpg", b"\xff\xd8 jpeg bytes")
    assert store.get("images/goldfish/abc.jpg") == b"\xff\xd8 jpeg bytes"
    assert (store.root / "images" / "goldfish" / "abc.jpg").read_bytes() == b"\xff\xd8 jpeg bytes"


def test_put_overwrites(store):
    store.put("a.txt", b"first")
    store.put("a.txt", b"second")
    assert store.get("a.txt") == b"second"


def test_exists(store):
    assert not store.exists("a/b.bin")
    store.put("a/b.bin", b"x")
    assert store.exists("a/b.bin")
    assert not store.exists("a")  # a folder is not an object


def test_sha256_of(store):
    data = b"some image bytes"
    store.put("x.bin", data)
    assert store.sha256_of("x.bin") == hashlib.sha256(data).hexdigest()
    assert store.sha256_of("missing.bin") is None


def test_keys_lists_objects_sorted_and_relative(store):
    for key in ["images/b/2.jpg", "pages/p.html", "images/a/1.jpg", "manifest.csv"]:
        store.put(key, b"x")
    assert list(store.keys()) == ["images/a/1.jpg", "images/b/2.jpg", "manifest.csv", "pages/p.html"]
    assert list(store.keys("images")) == ["images/a/1.jpg", "images/b/2.jpg"]
    assert list(store.keys("nothing-here")) == []


def test_keys_of_a_store_that_was_never_written_is_empty(tmp_path):
    assert list(LocalStore(tmp_path / "does-not-exist").keys()) == []


def test_writes_leave_no_temporary_files(store):
    for i in range(5):
        store.put(f"d/{i}.bin", bytes([i]) * 100)
    assert all_files(store.root) == [f"d/{i}.bin" for i in range(5)]


def test_keys_do_not_list_temporary_files_of_unfinished_writes(store):
    store.put("d/done.bin", b"x")
    (store.root / "d" / ".tmp-abc123").write_bytes(b"half written")
    assert list(store.keys()) == ["d/done.bin"]


def test_temp_file_of_a_writer_killed_mid_write_is_removed_by_the_next_store(tmp_path):
    """SIGKILL between writing the bytes and renaming them into place; a store opened afterwards
    deletes that partial file but not the temp file of a writer that is still running (this one)."""
    root = tmp_path / "store"
    killed_before_rename = (
        "import os, signal, sys\n"
        "from harvest.storage import LocalStore\n"
        "os.replace = lambda *_: os.kill(os.getpid(), signal.SIGKILL)\n"
        "LocalStore(sys.argv[1]).put('images/ab/abc.jpg', b'half of an image')\n"
    )
    writer = subprocess.run([sys.executable, "-c", killed_before_rename, str(root)])
    assert writer.returncode == -signal.SIGKILL
    [partial] = (p for p in (root / WRITING).iterdir() if p.is_file())
    assert partial.read_bytes() == b"half of an image"
    running = root / WRITING / f".tmp-{socket.gethostname()}.{os.getpid()}-ffff"
    running.write_bytes(b"still being written")

    store = LocalStore(root)
    assert sorted(p.name for p in (root / WRITING).iterdir()) == sorted([running.name, WRITING_MARKER])
    assert list(store.keys()) == []


def test_failed_write_leaves_no_temporary_file(store):
    (store.root / "d" / "target").mkdir(parents=True)  # os.replace onto a directory fails
    with pytest.raises(StorageError):
        store.put("d/target", b"new")
    assert [p.name for p in (store.root / "d").iterdir()] == ["target"]


@pytest.mark.parametrize("key", ["../x", "a/../../x", "/etc/passwd", ".."])
def test_key_escaping_the_root_is_refused(store, key):
    with pytest.raises(StorageError) as info:
        store.put(key, b"x")
    assert "escapes the store" in str(info.value)
    assert info.value.location == store.location
    assert not (store.root.parent / "x").exists()


def test_key_escaping_the_root_is_refused_for_reads_too(store):
    with pytest.raises(StorageError):
        store.get("../secret")
    with pytest.raises(StorageError):
        store.exists("../secret")


def test_symlink_out_of_the_root_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    store.root.mkdir(parents=True)
    (store.root / "link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(StorageError):
        store.put("link/x.bin", b"x")
    assert list(outside.iterdir()) == []


def test_write_into_an_unwritable_location_names_the_path(store):
    store.put("blocker", b"a file where a folder is needed")
    with pytest.raises(StorageError) as info:
        store.put("blocker/child.bin", b"x")
    expected = str(store.root / "blocker" / "child.bin")
    assert info.value.location == expected
    assert expected in str(info.value)
    assert "cannot write" in str(info.value)


def test_reading_a_missing_key_names_the_path(store):
    with pytest.raises(StorageError) as info:
        store.get("missing.bin")
    assert str(store.root / "missing.bin") in str(info.value)
    assert "cannot read" in str(info.value)


def test_root_is_absolute_and_user_expanded(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    store = LocalStore("~/data")
    assert store.root == tmp_path.resolve() / "data"
    assert store.location == str(tmp_path.resolve() / "data")
    assert store.url("a/b.jpg") == str(tmp_path.resolve() / "data" / "a" / "b.jpg")


def test_open_store_picks_local_for_a_folder(tmp_path):
    store = open_store(str(tmp_path / "x"))
    assert isinstance(store, LocalStore)


def test_writes_for_another_process_are_not_remembered_until_it_adopts_them(tmp_path):
    """An inspecting process writes for as long as its download task runs: it keeps no list of what
    it wrote; the task that adopts the keys syncs them."""
    writer, task = LocalStore(tmp_path), LocalStore(tmp_path)
    with writer.synced_elsewhere():
        writer.put("images/ab/one.jpg", b"one")
    assert writer._unsynced == [] and task._unsynced == []
    task.adopt("images/ab/one.jpg")
    assert task._unsynced == [str(tmp_path.resolve() / "images/ab/one.jpg")]
    task.sync()
    assert task._unsynced == [] and task.get("images/ab/one.jpg") == b"one"
