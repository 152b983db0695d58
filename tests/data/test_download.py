"""The downloader against a local HTTP server on 127.0.0.1: verified, refused, offline."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import logging
import tarfile
import threading
from http.server import HTTPServer, SimpleHTTPRequestHandler

import pytest

from macelab.data import download
from macelab.data.files import git_blob_sha1
from macelab.data.locate import locate
from macelab.errors import ChecksumMismatchError, DataError, MissingDataError

RELPATH = "dataset_3BPA/test_300K.xyz"
CONTENT = b"1\nProperties=species:S:1:pos:R:3 energy=-13.6\nH 0.0 0.0 0.0\n"


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass


@pytest.fixture
def server(tmp_path):
    """Serve ``tmp_path/www`` on 127.0.0.1; yields (folder, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    handler = functools.partial(QuietHandler, directory=str(www))
    httpd = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield www, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def online(monkeypatch, tmp_path):
    monkeypatch.delenv("MACELAB_OFFLINE", raising=False)
    return tmp_path / "cache"


def register(monkeypatch, relpath, **changes):
    entry = dataclasses.replace(download.REGISTRY[relpath], **changes)
    monkeypatch.setitem(download.REGISTRY, relpath, entry)
    return entry


def leftovers(cache_dir):
    return [p for p in (cache_dir / "downloads").rglob("*") if p.is_file()]


def test_download_with_matching_sha256(server, online, monkeypatch):
    www, url = server
    (www / "f.xyz").write_bytes(CONTENT)
    register(monkeypatch, RELPATH, url=f"{url}/f.xyz", sha256=hashlib.sha256(CONTENT).hexdigest())
    path = download.download(RELPATH, cache_dir=online)
    assert path == online / "downloads" / RELPATH
    assert path.read_bytes() == CONTENT
    assert leftovers(online) == [path]  # no temporary file left behind
    (www / "f.xyz").unlink()
    assert download.download(RELPATH, cache_dir=online) == path  # cached: no second request


def test_checksum_mismatch_is_refused(server, online, monkeypatch):
    www, url = server
    (www / "f.xyz").write_bytes(CONTENT.replace(b"13.6", b"13.7"))
    register(monkeypatch, RELPATH, url=f"{url}/f.xyz", sha256=hashlib.sha256(CONTENT).hexdigest())
    with pytest.raises(ChecksumMismatchError) as info:
        download.download(RELPATH, cache_dir=online)
    assert "refused" in str(info.value) and info.value.field == "sha256"
    assert leftovers(online) == []  # nothing kept, so nothing is used later


def test_git_object_id_verifies_files_without_sha256(server, online, monkeypatch, tmp_path):
    www, url = server
    (www / "f.xyz").write_bytes(CONTENT)
    blob = git_blob_sha1(www / "f.xyz")
    assert blob == hashlib.sha1(b"blob %d\0" % len(CONTENT) + CONTENT).hexdigest()
    register(monkeypatch, RELPATH, url=f"{url}/f.xyz", sha256=None, git_blob_sha1=blob)
    assert download.download(RELPATH, cache_dir=online).read_bytes() == CONTENT
    other = "dataset_3BPA/test_600K.xyz"
    register(monkeypatch, other, url=f"{url}/f.xyz", sha256=None, git_blob_sha1="0" * 40)
    with pytest.raises(ChecksumMismatchError, match="git object id"):
        download.download(other, cache_dir=online)


def test_unverifiable_file_is_kept_with_a_warning(server, online, monkeypatch, caplog):
    www, url = server
    (www / "f.xyz").write_bytes(CONTENT)
    register(monkeypatch, RELPATH, url=f"{url}/f.xyz", sha256=None, git_blob_sha1=None)
    with caplog.at_level(logging.WARNING, logger="macelab.data.download"):
        download.download(RELPATH, cache_dir=online)
    assert "UNVERIFIED" in caplog.text
    assert hashlib.sha256(CONTENT).hexdigest() in caplog.text


def test_size_mismatch_is_refused(server, online, monkeypatch):
    www, url = server
    (www / "f.xyz").write_bytes(CONTENT)
    register(monkeypatch, RELPATH, url=f"{url}/f.xyz", size=len(CONTENT) + 1)
    with pytest.raises(ChecksumMismatchError, match="bytes"):
        download.download(RELPATH, cache_dir=online)


def test_server_error_is_a_missing_file(server, online, monkeypatch, tmp_path):
    _, url = server
    register(monkeypatch, RELPATH, url=f"{url}/absent.xyz")
    with pytest.raises(MissingDataError) as info:
        locate(RELPATH, root=tmp_path / "root", cache_dir=online)
    message = str(info.value)
    assert RELPATH in message and "absent.xyz" in message and "data.root" in message
    assert "MACELAB_DATA" in message


def test_offline_message_names_the_file_and_where_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("MACELAB_DATA", raising=False)
    with pytest.raises(MissingDataError) as info:
        locate("dataset_acac/train_600K.xyz", cache_dir=tmp_path)  # MACELAB_OFFLINE=1 here
    message = str(info.value)
    assert info.value.file == "dataset_acac/train_600K.xyz"
    assert "raw.githubusercontent.com/davkovacs/BOTNet-datasets" in message
    assert "data.root" in message and "MACELAB_DATA" in message
    with pytest.raises(MissingDataError, match="download"):
        locate("dataset_acac/train_600K.xyz", cache_dir=tmp_path, download=False)


def test_rmd17_members_are_extracted_from_the_archive(server, online, monkeypatch):
    www, url = server
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:bz2") as tar:
        for name, data in [
            ("rmd17/splits/index_test_03.csv", b"5\n3\n"),
            ("rmd17/splits/index_train_03.csv", b"1\n2\n"),
            ("rmd17/readme.txt", b""),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (www / "rmd17.tar.bz2").write_bytes(buffer.getvalue())
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    register(monkeypatch, "rmd17.tar.bz2", url=f"{url}/rmd17.tar.bz2", sha256=sha)
    found = locate("rmd17/splits/index_test_03.csv", cache_dir=online)
    assert found.origin == "downloaded"
    assert found.path.read_bytes() == b"5\n3\n"
    train_split = online / "downloads" / "rmd17/splits/index_train_03.csv"
    assert train_split.read_bytes() == b"1\n2\n"  # the same pass took the other split too
    assert not (online / "downloads" / "rmd17/readme.txt").exists()  # not a registered file
    with pytest.raises(DataError, match="no member"):
        download.download("rmd17/splits/index_test_04.csv", cache_dir=online)


def test_data_root_comes_first(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "dataset_acac").mkdir(parents=True)
    (root / "dataset_acac" / "train_300K.xyz").write_bytes(CONTENT)
    found = locate("dataset_acac/train_300K.xyz", root=root)
    assert (found.origin, found.path) == ("root", root / "dataset_acac" / "train_300K.xyz")
    monkeypatch.delenv("MACELAB_DATA", raising=False)
    assert locate("dataset_acac/train_300K.xyz").origin == "packaged"
    monkeypatch.setenv("MACELAB_DATA", str(root))
    assert locate("dataset_acac/train_300K.xyz").origin == "root"
