"""The packaged AcAc copy: complete, licensed, and identical to the official files."""

from __future__ import annotations

import re

from macelab.data.download import REGISTRY
from macelab.data.files import content_sha256
from macelab.data.packaged import PACKAGED_DIR, packaged_path, packaged_sha256

PACKAGED = ["train_300K", "test_MD_300K", "test_MD_600K", "test_H_transfer", "test_dihedral",
            "isolated_atoms"]  # fmt: skip


def test_every_packaged_file_matches_its_checksum_and_the_registry():
    for name in PACKAGED:
        relpath = f"dataset_acac/{name}.xyz"
        path = packaged_path(relpath)
        assert path is not None and path.suffix == ".gz"
        digest = content_sha256(path)
        assert digest == packaged_sha256(relpath) == REGISTRY[relpath].sha256
    assert packaged_path("dataset_acac/train_600K.xyz") is None  # not shipped
    assert packaged_path("dataset_3BPA/train_300K.xyz") is None


def test_licence_ships_with_the_data():
    licence = (PACKAGED_DIR / "acac" / "LICENSE").read_text()
    assert "MIT License" in licence


def test_registry_agrees_with_the_shared_readme(shared_data_root):
    readme = (shared_data_root / "README.md").read_text()
    sums = dict(
        (path, digest) for digest, path in re.findall(r"^([0-9a-f]{64}) (\S+)$", readme, re.M)
    )
    for relpath, entry in REGISTRY.items():
        if relpath in sums:
            assert entry.sha256 == sums[relpath], relpath
            assert content_sha256(shared_data_root / relpath) == entry.sha256
