"""MACEDataModule end to end: packaged AcAc offline, shared 3BPA, user xyz files, DDP ranks."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from macelab.data.datamodule import MACEDataModule
from macelab.errors import ConfigError, MissingDataError

ACAC_TESTS = ["test_MD_300K", "test_MD_600K", "test_H_transfer", "test_dihedral"]
BPA_TEST_FILES = ["test_300K.xyz", "test_600K.xyz", "test_1200K.xyz", "test_dih.xyz"]


@pytest.fixture(scope="module")
def acac(tmp_path_factory):
    """The AcAc data module with no data root: everything from the packaged copy."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MACELAB_DATA", raising=False)
        patch.setenv("MACELAB_OFFLINE", "1")
        module = MACEDataModule(
            dataset="acac", r_max=5.0, seed=3, cache_dir=tmp_path_factory.mktemp("acac_cache")
        )
        module.setup("fit")
    return module


def test_packaged_acac_without_a_data_root(acac):
    assert acac.root is None
    assert (len(acac.train_dataset), len(acac.val_dataset)) == (450, 50)
    assert acac.test_set_names == ACAC_TESTS
    assert [len(acac.test_datasets[n]) for n in ACAC_TESTS] == [650, 650, 15, 45]
    train = set(acac.train_dataset.tensors["index"].tolist())
    valid = set(acac.val_dataset.tensors["index"].tolist())
    assert not train & valid and train | valid == set(range(500))
    stats = acac.statistics
    assert stats.atomic_numbers == [1, 6, 8] and stats.e0_source == "file"
    assert stats.atomic_energies == [-13.568422178253735, -1026.8538996116154, -2037.796869412825]
    assert stats.num_configurations == 450 and stats.r_max == 5.0
    assert 10 < stats.avg_num_neighbors < 14


def test_energy_only_test_sets_keep_their_masks(acac):
    loaders = acac.test_dataloader()
    assert len(loaders) == len(acac.test_set_names)
    for name, loader in zip(acac.test_set_names, loaders, strict=True):
        batch = next(iter(loader))
        assert batch.has_energy.all()
        assert bool(batch.has_forces.any()) == (name in ("test_MD_300K", "test_MD_600K"))
        if not batch.has_forces.any():
            assert torch.all(batch.forces == 0)  # placeholders, masked out
    first = acac.test_datasets["test_H_transfer"][0]
    assert first.energy.item() == pytest.approx(-9392.075934260127)


def test_train_loader_and_resume(acac):
    batches = list(acac.train_dataloader())
    assert len(batches) == 90 and batches[0].num_graphs == 5
    order = [i for b in batches for i in b.index.tolist()]
    assert sorted(order) == sorted(acac.train_dataset.tensors["index"].tolist())
    acac.resume_training_at(epoch=0, batches_done=4)
    resumed = [i for b in acac.train_dataloader() for i in b.index.tolist()]
    assert resumed == order[20:]
    assert acac.train_sampler is acac.train_sampler  # one object: skip() survives reloads


def test_split_is_reproducible_by_seed(acac, tmp_path):
    again = MACEDataModule(dataset="acac", r_max=5.0, seed=3, cache_dir=acac.cache_dir)
    other = MACEDataModule(dataset="acac", r_max=5.0, seed=4, cache_dir=acac.cache_dir)
    again.setup("fit")
    other.setup("fit")
    valid = acac.val_dataset.tensors["index"]
    assert torch.equal(again.val_dataset.tensors["index"], valid)
    assert not torch.equal(other.val_dataset.tensors["index"], valid)


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_ranks_see_different_data_and_evaluate_everything_once(acac, world_size):
    train, evaluated = [], Counter()
    for rank in range(world_size):
        acac.trainer = SimpleNamespace(global_rank=rank, world_size=world_size)
        try:
            train.append([i for b in acac.train_dataloader() for i in b.index.tolist()])
            for loader in [acac.val_dataloader(), *acac.test_dataloader()]:
                for batch in loader:
                    evaluated.update((loader.dataset.source, i) for i in batch.index.tolist())
        finally:
            acac.trainer = None
    assert len({len(t) for t in train}) == 1
    assert not set(train[0]) & set(train[1])
    sizes = [len(acac.val_dataset)] + [len(acac.test_datasets[n]) for n in ACAC_TESTS]
    assert sum(evaluated.values()) == sum(sizes)  # nothing lost
    assert set(evaluated.values()) == {1}  # nothing twice


def test_summary_lists_every_split(acac):
    text = acac.summary()
    for name in ["train", "valid", *ACAC_TESTS, "E0s (file, eV)", "avg_num_neighbors"]:
        assert name in text
    assert "energy+forces" in text


def test_e0_choices(acac):
    ls = MACEDataModule(dataset="acac", r_max=5.0, e0s="least_squares", cache_dir=acac.cache_dir)
    ls.setup("fit")
    assert ls.statistics.e0_source == "least_squares"
    mapping = {"H": -13.0, "C": -1000.0, "O": -2000.0}
    given = MACEDataModule(dataset="acac", r_max=5.0, e0s=mapping, cache_dir=acac.cache_dir)
    given.setup("fit")
    assert given.statistics.atomic_energies == [-13.0, -1000.0, -2000.0]
    with pytest.raises(ConfigError, match="least_squares"):
        MACEDataModule(dataset="acac", r_max=5.0, e0s="guess", cache_dir=acac.cache_dir).setup()


def test_train_600K_without_root_says_where_to_get_it(acac, monkeypatch):
    monkeypatch.delenv("MACELAB_DATA", raising=False)
    module = MACEDataModule(dataset="acac", train_set="600K", cache_dir=acac.cache_dir)
    with pytest.raises(MissingDataError, match=r"train_600K\.xyz") as info:
        module.setup("fit")
    assert "BOTNet-datasets" in str(info.value) and "data.root" in str(info.value)


@pytest.mark.data
def test_3bpa_trains_on_what_is_present(shared_data_root, tmp_path):
    module = MACEDataModule(dataset="3bpa", root=shared_data_root, r_max=5.0, download=False)
    module.setup("fit")
    assert (len(module.train_dataset), len(module.val_dataset)) == (450, 50)
    assert module.statistics.atomic_numbers == [1, 6, 7, 8]
    assert module.statistics.atomic_energies == [
        -13.587222780835477,
        -1029.4889999855063,
        -1484.9814568572233,
        -2041.9816003861047,
    ]
    present = [n for n in BPA_TEST_FILES if (shared_data_root / "dataset_3BPA" / n).is_file()]
    assert len(module.test_set_names) == len(present)
    summary = module.summary()
    for name in BPA_TEST_FILES:
        if name not in present:
            assert f"dataset_3BPA/{name}" in summary
            assert "raw.githubusercontent.com/davkovacs/BOTNet-datasets/" in summary
    assert next(iter(module.train_dataloader())).num_graphs == 5


@pytest.mark.data
def test_acac_from_the_shared_root_equals_the_packaged_copy(shared_data_root, acac):
    module = MACEDataModule(dataset="acac", root=shared_data_root, r_max=5.0, seed=3)
    module.setup("fit")
    assert module.statistics == acac.statistics
    assert module.train_dataset.source == acac.train_dataset.source


@pytest.mark.data
def test_3bpa_mixed_temperature_training_set(shared_data_root):
    module = MACEDataModule(
        dataset="3bpa", root=shared_data_root, r_max=4.0, train_set="mixedT", download=False
    )
    module.setup("fit")
    assert module.train_dataset.source == "dataset_3BPA/train_mixedT.xyz"
    assert len(module.train_dataset) + len(module.val_dataset) == 500


XYZ_FRAME = (
    "3\nProperties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy={e} config_type={t}\n"
    "O {x} 0.0 0.0 0.1 0.0 0.0\nH {x} 0.96 0.0 -0.1 0.0 0.0\nH {x} -0.2 0.93 0.0 0.0 0.0\n"
)
ISOLATED = "1\nProperties=species:S:1:pos:R:3 REF_energy={e} config_type=IsolatedAtom\n{s} 0 0 0\n"


def test_user_xyz_files_with_custom_keys(tmp_path):
    train = "".join(XYZ_FRAME.format(e=-2069.0 - 0.01 * k, t="md", x=0.01 * k) for k in range(12))
    train += ISOLATED.format(e=-13.6, s="H") + ISOLATED.format(e=-2042.0, s="O")
    (tmp_path / "train.xyz").write_text(train)
    (tmp_path / "valid.xyz").write_text(XYZ_FRAME.format(e=-2069.5, t="md", x=0.3))
    (tmp_path / "a.xyz").write_text(XYZ_FRAME.format(e=-2069.2, t="md", x=0.2) * 3)
    module = MACEDataModule(
        dataset="xyz",
        root=tmp_path,
        train_file="train.xyz",  # relative to the data root
        valid_file=str(tmp_path / "valid.xyz"),
        test_files={"set_a": "a.xyz"},
        energy_key="REF_energy",
        forces_key="REF_forces",
        r_max=3.0,
        num_train=10,
    )
    module.setup("fit")
    assert module.statistics.atomic_energies == [-13.6, -2042.0]  # from the IsolatedAtom frames
    assert len(module.train_dataset) == 10 and len(module.val_dataset) == 1
    assert module.test_set_names == ["set_a"]
    assert module.statistics.num_configurations == 10  # isolated atoms are not trained on
    np.testing.assert_allclose(module.val_dataset[0].forces[1].numpy(), [-0.1, 0.0, 0.0])
    assert "2 isolated-atom frame(s)" in module.summary()  # said, not silently dropped


def test_xyz_needs_a_training_file():
    with pytest.raises(ConfigError, match="train_file"):
        MACEDataModule(dataset="xyz", r_max=3.0).setup("fit")
    with pytest.raises(ConfigError, match="acac"):
        MACEDataModule(dataset="qm9")
