"""Downloads against a real HTTP server on 127.0.0.1 that honours Range requests, like NIH's and Zenodo's."""

import hashlib
import http.server
import io
import socket
import tarfile
import threading

import numpy as np
import pytest

from cxraug.core.errors import CxraugError
from cxraug.data import download as dl


class RangeHandler(http.server.BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut_after: int | None = None  # simulate a dropped connection on the first full request
    requests: list[str] = []

    def do_GET(self):  # noqa: N802
        name = self.path.lstrip("/").split("?")[0]
        data = self.files.get(name)
        self.requests.append(f"{name} {self.headers.get('Range')}")
        if data is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if self.headers.get("Range") else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if type(self).cut_after is not None and not start:
            self.wfile.write(body[: type(self).cut_after])
            type(self).cut_after = None
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    RangeHandler.files, RangeHandler.requests, RangeHandler.cut_after = {}, [], None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _tar_with(names):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in names:
            payload = name.encode() * 50
            info = tarfile.TarInfo(f"images/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    return buf.getvalue()


def test_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    data = np.random.default_rng(0).bytes(300_000)
    RangeHandler.files["blob.bin"] = data
    RangeHandler.cut_after = 100_000
    with pytest.raises(CxraugError, match="rerun to resume"):
        dl.download(f"{server}/blob.bin", tmp_path / "blob.bin", timeout=5)
    assert (tmp_path / "blob.bin.part").stat().st_size < len(data)
    dl.download(f"{server}/blob.bin", tmp_path / "blob.bin", md5=hashlib.md5(data).hexdigest(), timeout=5)
    assert (tmp_path / "blob.bin").read_bytes() == data
    assert RangeHandler.requests[-1].startswith("blob.bin bytes=")


def test_checksum_mismatch_removes_the_file_and_says_so(server, tmp_path):
    RangeHandler.files["x.npz"] = b"tampered"
    with pytest.raises(CxraugError, match="does not match the published"):
        dl.download(f"{server}/x.npz", tmp_path / "x.npz", md5="0" * 32)
    assert not list(tmp_path.iterdir())


def test_nih_archives_are_downloaded_and_extracted_to_the_official_layout(server, tmp_path):
    RangeHandler.files["images_001.tar.gz"] = _tar_with(["00000001_000.png", "00000001_001.png"])
    RangeHandler.files["images_002.tar.gz"] = _tar_with(["00000002_000.png"])
    n = dl.download_nih(tmp_path, [1, 2], mirror=server)
    assert n == 3
    assert (tmp_path / "images_002" / "images" / "00000002_000.png").read_bytes() == b"00000002_000.png" * 50
    assert not (tmp_path / "archives" / "images_001.tar.gz").exists()
    RangeHandler.requests.clear()
    assert dl.download_nih(tmp_path, [1, 2], mirror=server) == 0  # finished archives are not fetched again
    assert RangeHandler.requests == []


def test_medmnist_md5_is_checked(server, tmp_path, monkeypatch):
    payload = b"npz bytes"
    RangeHandler.files["chestmnist_64.npz"] = payload
    monkeypatch.setitem(dl.MEDMNIST_CHEST, 64, ("unused", hashlib.md5(payload).hexdigest()))
    assert dl.download_medmnist(tmp_path, 64, mirror=server).read_bytes() == payload
    with pytest.raises(CxraugError, match="sizes \\[28, 64, 128, 224\\]"):
        dl.download_medmnist(tmp_path, 100)


def test_offline_is_a_clear_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CxraugError, match="cannot reach 127.0.0.1.*offline"):
        dl.download(f"http://127.0.0.1:{port}/images_001.tar.gz", tmp_path / "a.tar.gz", timeout=5)
