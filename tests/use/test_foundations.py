"""Foundation models by name (macelab.foundations): download from a local HTTP server on
127.0.0.1 (no network), checksum pinning and refusal, the trust opt-in for the pickled
file, the converted-model cache, and MACECalculator with names and mace-torch files.

The served file is a tiny macelab model converted to mace-torch and saved with torch.save,
registered under a test name in place of an official entry.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import re
import threading
from pathlib import Path

import pytest
import torch

from macelab import foundations
from macelab.calculator import MACECalculator
from macelab.errors import ChecksumMismatchError, ConfigError, MacelabError, UntrustedFileError
from tests.model.helpers import read_molecule, small_model

pytestmark = pytest.mark.mace_torch
NAME = "tiny-test"


class _Handler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, format: str, *args) -> None:
        self.requests.append(self.path)


@pytest.fixture
def server(tmp_path):
    """A static file server on 127.0.0.1 for ``tmp_path/www``; yields (url, requests)."""
    www = tmp_path / "www"
    www.mkdir()
    requests: list[str] = []
    handler = type("Handler", (_Handler,), {"requests": requests})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", requests, www
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tiny_model():
    pytest.importorskip("mace.modules")
    return small_model(
        seed=7, channels=4, max_L=0, max_ell=1, correlation=2, num_interactions=1,
        radial_mlp=[8], atomic_numbers=[1, 6, 8], atomic_energies=[-13.6, -1029.0, -2041.0],
    ).eval()  # fmt: skip


@pytest.fixture
def registry(server, tiny_model, tmp_path, monkeypatch):
    """The test entry, its file served, an empty cache; yields (entry, requests, sha256)."""
    from macelab.interop import to_mace_torch

    url, requests, www = server
    torch.save(to_mace_torch(tiny_model), www / "tiny.model")
    entry = foundations.FoundationModel(NAME, f"{url}/tiny.model", None, None, "MIT", "a test")
    monkeypatch.setitem(foundations.FOUNDATION_MODELS, NAME, entry)
    monkeypatch.setenv("MACELAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MACELAB_OFFLINE", raising=False)
    sha256 = hashlib.sha256((www / "tiny.model").read_bytes()).hexdigest()
    return entry, requests, sha256


@pytest.fixture(scope="module")
def molecule():
    return read_molecule("acac", 3)


def _energy_forces(calc, atoms):
    atoms = atoms.copy()
    atoms.calc = calc
    return atoms.get_potential_energy(), atoms.get_forces()


def test_registry_entries_are_official_and_pinnable():
    for name, entry in foundations.FOUNDATION_MODELS.items():
        assert name == entry.name and entry.license and entry.description
        assert re.match(r"https://(github\.com|raw\.githubusercontent\.com)/ACEsuit/", entry.url)
        assert entry.filename.endswith(".model")
        assert entry.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", entry.sha256)


def test_no_checksum_means_no_download_until_the_user_decides(registry):
    _, requests, _ = registry
    with pytest.raises(ConfigError, match="no published or pinned sha256"):
        foundations.fetch(NAME)
    assert requests == []


def test_first_download_is_recorded_then_checked(registry):
    _, requests, sha256 = registry
    path = foundations.fetch(NAME, accept_unpinned=True)
    assert path == foundations.model_path(NAME) and path.is_file()
    assert foundations.expected_sha256(NAME) == sha256
    assert foundations.fetch(NAME) == path and len(requests) == 1  # cached: no new request
    with open(path, "ab") as handle:  # the cached copy changes
        handle.write(b"tampered")
    with pytest.raises(ChecksumMismatchError, match="differs from the expected"):
        foundations.fetch(NAME)
    assert not path.exists()


def test_checksum_mismatch_is_refused_and_nothing_is_kept(registry):
    _, requests, _ = registry
    with pytest.raises(ChecksumMismatchError, match="refused and deleted"):
        foundations.fetch(NAME, sha256="0" * 64)
    assert len(requests) == 1
    folder = foundations.model_dir(NAME)
    assert [p.name for p in folder.iterdir()] == ["tiny.model.sha256"]  # the pin only


def test_pinned_checksum_downloads(registry):
    _, _, sha256 = registry
    foundations.pin_checksum(NAME, sha256.upper())
    assert foundations.fetch(NAME).is_file()
    with pytest.raises(ConfigError, match="not a sha256"):
        foundations.pin_checksum(NAME, "abc")


def test_calculator_by_name_needs_trust_once(registry, tiny_model, molecule):
    _, requests, sha256 = registry
    foundations.pin_checksum(NAME, sha256)
    with pytest.raises(UntrustedFileError, match="trust_pickle=True"):
        MACECalculator(NAME)
    assert requests == []  # refused before downloading
    expected = _energy_forces(MACECalculator(tiny_model), molecule)
    energy, forces = _energy_forces(MACECalculator(NAME, trust_pickle=True), molecule)
    assert energy == pytest.approx(expected[0], abs=1e-9)
    torch.testing.assert_close(torch.as_tensor(forces), torch.as_tensor(expected[1]))
    # converted once: later uses load the cached model folder, no unpickling, no download
    assert (foundations.model_dir(NAME) / foundations.CONVERTED / "model.safetensors").is_file()
    energy_again, _ = _energy_forces(MACECalculator(NAME), molecule)
    assert energy_again == energy and len(requests) == 1


def test_calculator_takes_a_mace_torch_file(registry, tiny_model, molecule):
    path = foundations.fetch(NAME, accept_unpinned=True)
    with pytest.raises(UntrustedFileError, match="pickle"):
        MACECalculator(str(path))
    energy, _ = _energy_forces(MACECalculator(path, trust_pickle=True), molecule)
    assert energy == pytest.approx(_energy_forces(MACECalculator(tiny_model), molecule)[0])


def test_unknown_names_list_the_known_ones():
    with pytest.raises(MacelabError, match="mace-off-small"):
        MACECalculator("mace-off-tiny")
    assert not Path("mace-off-tiny").exists()
