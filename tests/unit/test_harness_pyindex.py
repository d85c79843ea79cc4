"""The harness's package index: what it serves, read from a folder of wheels."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import pytest

from harness.cluster import PyIndexInfo
from harness.pyindex import IndexServer, normalize, requires_python, wheel_project


def make_wheel(folder: Path, name: str, version: str, requires: str = "") -> Path:
    path = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        metadata = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        metadata += f"Requires-Python: {requires}\n" if requires else ""
        wheel.writestr(f"{name}-{version}.dist-info/METADATA", metadata + "\nA description.\n")
    return path


def test_names_are_normalized_as_pep_503_says():
    assert normalize("Foo.Bar__baz") == "foo-bar-baz"
    assert wheel_project("zope.interface-6.0-py3-none-any.whl") == "zope-interface"


def test_an_index_lists_its_wheels_with_hashes_and_answers_404_for_others(tmp_path: Path):
    make_wheel(tmp_path, "Tiny_Pkg", "1.0", ">=3.8")
    assert requires_python(str(tmp_path / "Tiny_Pkg-1.0-py3-none-any.whl")) == ">=3.8"
    server = IndexServer(("127.0.0.1", 0), str(tmp_path), str(tmp_path / "log.jsonl"))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        listing = urllib.request.urlopen(f"{base}/simple/").read().decode()
        assert '<a href="/simple/tiny-pkg/">tiny-pkg</a>' in listing
        files = urllib.request.urlopen(f"{base}/simple/Tiny.Pkg/").read().decode()
        assert 'href="/files/Tiny_Pkg-1.0-py3-none-any.whl#sha256=' in files
        assert 'data-requires-python="&gt;=3.8"' in files
        wheel = urllib.request.urlopen(f"{base}/files/Tiny_Pkg-1.0-py3-none-any.whl").read()
        assert wheel == (tmp_path / "Tiny_Pkg-1.0-py3-none-any.whl").read_bytes()
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/simple/no-such-thing/")
        assert missing.value.code == 404
        assert '"path": "/simple/no-such-thing/", "status": 404' in (tmp_path / "log.jsonl").read_text()
    finally:
        server.shutdown()


def test_pods_get_the_index_through_pip_and_uv_settings_only():
    info = PyIndexInfo("http://10.88.0.1:5000/simple/", "/w", "/l")
    assert info.env() == {
        "PIP_INDEX_URL": "http://10.88.0.1:5000/simple/",
        "PIP_TRUSTED_HOST": "10.88.0.1",
        "UV_INDEX_URL": "http://10.88.0.1:5000/simple/",
        "UV_DEFAULT_INDEX": "http://10.88.0.1:5000/simple/",
    }
