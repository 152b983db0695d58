"""The graph cache: a second load reads the cache, keyed by content and every parameter."""

from __future__ import annotations

import torch

from macelab.data import cache, sources
from macelab.data.files import read_text
from macelab.data.locate import LocatedFile
from macelab.data.packaged import packaged_path
from macelab.data.sources import load_xyz_store
from macelab.data.xyz import LabelKeys


def located(tmp_path, name="small.xyz", frames=20) -> LocatedFile:
    """A private copy of the first ``frames`` AcAc test frames (15 atoms each)."""
    lines = read_text(packaged_path("dataset_acac/test_dihedral.xyz")).splitlines()
    text = "".join(line + "\n" for line in lines[: 17 * frames])
    path = tmp_path / name
    path.write_text(text)
    return LocatedFile(path, name, "user")


def refuse_to_build(*args, **kwargs):
    raise AssertionError("the graphs were rebuilt instead of read from the cache")


def test_second_load_comes_from_the_cache(tmp_path, monkeypatch):
    source = located(tmp_path)
    first = load_xyz_store(source, 5.0, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "graphs").glob("*.pt"))) == 1
    monkeypatch.setattr(sources, "build_xyz_store", refuse_to_build)
    second = load_xyz_store(source, 5.0, cache_dir=tmp_path / "cache")
    assert len(second) == len(first) == 20
    for key, value in first.tensors.items():
        assert torch.equal(second.tensors[key], value), key
    assert second.config_types == first.config_types


def test_key_changes_with_r_max_keys_and_content(tmp_path, monkeypatch):
    source = located(tmp_path)
    load_xyz_store(source, 5.0, cache_dir=tmp_path / "cache")
    built = []
    original = sources.build_xyz_store

    def counting(*args, **kwargs):
        built.append(args[1:])
        return original(*args, **kwargs)

    monkeypatch.setattr(sources, "build_xyz_store", counting)
    load_xyz_store(source, 4.0, cache_dir=tmp_path / "cache")  # new r_max
    load_xyz_store(source, 5.0, LabelKeys(energy="E"), cache_dir=tmp_path / "cache")  # new key
    source.path.write_text(source.path.read_text().replace("-0.8", "-0.9", 1))  # new content
    load_xyz_store(source, 5.0, cache_dir=tmp_path / "cache")
    assert len(built) == 3
    load_xyz_store(source, 5.0, cache_dir=tmp_path / "cache")  # now cached too
    assert len(built) == 3


def test_damaged_cache_entry_is_rebuilt(tmp_path):
    source = located(tmp_path)
    store = load_xyz_store(source, 5.0, cache_dir=tmp_path / "cache")
    (entry,) = (tmp_path / "cache" / "graphs").glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:100])
    again = load_xyz_store(source, 5.0, cache_dir=tmp_path / "cache")
    assert torch.equal(again.tensors["positions"], store.tensors["positions"])
    assert cache.load(entry) is not None  # rewritten whole


def test_cache_can_be_switched_off(tmp_path, monkeypatch):
    source = located(tmp_path)
    load_xyz_store(source, 5.0, cache_dir=tmp_path / "cache", use_cache=False)
    assert not (tmp_path / "cache" / "graphs").exists()


def test_same_content_under_another_name_shares_the_entry(tmp_path, monkeypatch):
    first = located(tmp_path, "a.xyz")
    load_xyz_store(first, 5.0, cache_dir=tmp_path / "cache")
    monkeypatch.setattr(sources, "build_xyz_store", refuse_to_build)
    second = located(tmp_path, "b.xyz")
    store = load_xyz_store(second, 5.0, cache_dir=tmp_path / "cache")
    assert store.source == "b.xyz"  # messages name the file actually read
