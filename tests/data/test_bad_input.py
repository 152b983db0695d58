"""Every kind of bad input gives a DataError naming the file, the record and the field.

Each test writes a small broken file into ``tmp_path``. Messages must be one paragraph (the
command-line entry points print them as they are) and nothing may be skipped silently.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from ase import Atoms

from macelab.data.checks import check_elements
from macelab.data.datamodule import MACEDataModule
from macelab.data.graph import atoms_to_graph
from macelab.data.rmd17 import mace_protocol_split, read_rmd17_npz, read_split_indices
from macelab.data.splits import train_valid_split
from macelab.data.store import GraphStore
from macelab.data.xyz import read_xyz
from macelab.errors import AtomsTooCloseError, ConfigError, DataError, MacelabError

HEADER = 'Properties=species:S:1:pos:R:3:forces:R:3 energy={energy} pbc="F F F"'


def frame(energy="-10.0", z=("O", "H", "H"), shift=0.0, header=HEADER) -> str:
    """One water-like frame as extended-XYZ text (3 atoms, forces)."""
    rows = [
        f"{s} {0.96 * k + shift:.4f} {0.1 * k:.4f} 0.0 0.{k}1 -0.{k}2 0.{k}3"
        for k, s in enumerate(z)
    ]
    return f"{len(z)}\n{header.format(energy=energy)}\n" + "\n".join(rows) + "\n"


def write(tmp_path, text: str, name: str = "bad.xyz"):
    path = tmp_path / name
    path.write_text(text)
    return path


def assert_error(exc_info, *, file, record, field) -> DataError:
    exc = exc_info.value
    assert isinstance(exc, DataError)
    assert exc.file is not None and exc.file.endswith(str(file))
    assert exc.record == record
    assert exc.field == field
    assert "\n" not in str(exc)  # one paragraph
    return exc


# -- extended XYZ ---------------------------------------------------------------------------
def test_truncated_xyz(tmp_path):
    text = frame() + frame()
    path = write(tmp_path, "\n".join(text.splitlines()[:-2]) + "\n")
    with pytest.raises(DataError) as info:
        read_xyz(path)
    exc = assert_error(info, file="bad.xyz", record=1, field="atoms")
    assert "truncated" in str(exc) and "line 6" in str(exc)


def test_corrupted_number_in_atom_line(tmp_path):
    lines = (frame() + frame() + frame()).splitlines()
    lines[13] = lines[13].replace("0.0", "0.o", 1)  # frame 2, second atom, z coordinate
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_xyz(path)
    exc = assert_error(info, file="bad.xyz", record=2, field="pos")
    assert "line 14" in str(exc) and "'0.o'" in str(exc)


def test_missing_column(tmp_path):
    lines = (frame() + frame()).splitlines()
    lines[7] = " ".join(lines[7].split()[:-1])
    path = write(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(DataError) as info:
        read_xyz(path)
    assert "line 8" in str(assert_error(info, file="bad.xyz", record=1, field="Properties"))


def test_corrupted_atom_count(tmp_path):
    path = write(tmp_path, frame() + "x3\n" + frame().split("\n", 1)[1])
    with pytest.raises(DataError) as info:
        read_xyz(path)
    assert "line 6" in str(assert_error(info, file="bad.xyz", record=1, field="number of atoms"))


def test_blank_line_inside_file_is_not_the_end(tmp_path):
    path = write(tmp_path, frame() + "\n" + frame())  # ASE alone would stop reading here
    with pytest.raises(DataError) as info:
        read_xyz(path)
    assert_error(info, file="bad.xyz", record=1, field="number of atoms")


def test_unknown_element_symbol(tmp_path):
    path = write(tmp_path, frame() + frame(z=("O", "Xx", "H")))
    with pytest.raises(DataError) as info:
        read_xyz(path)
    assert "'Xx'" in str(assert_error(info, file="bad.xyz", record=1, field="species"))


def test_empty_file(tmp_path):
    with pytest.raises(DataError, match="no frames"):
        read_xyz(write(tmp_path, "\n"))


def test_energy_that_is_not_a_number(tmp_path):
    path = write(tmp_path, frame() + frame(energy="abc"))
    with pytest.raises(DataError) as info:
        read_xyz(path)
    assert_error(info, file="bad.xyz", record=1, field="energy")


@pytest.mark.parametrize(
    ("energy", "replace", "field"),
    [
        ("nan", None, "energy"),
        ("inf", None, "energy"),
        ("-1.0", ("0.0 0.11", "nan 0.11"), "positions"),
        ("-1.0", ("-0.12", "inf"), "forces"),
    ],
)
def test_nan_or_inf_in_any_array(tmp_path, energy, replace, field):
    bad = frame(energy=energy)
    if replace:
        bad = bad.replace(*replace)
    path = write(tmp_path, frame() + frame() + bad)
    with pytest.raises(DataError) as info:
        read_xyz(path)
    assert "NaN or inf" in str(info.value) or energy in str(info.value)
    assert_error(info, file="bad.xyz", record=2, field=field)


def test_forces_shape_mismatch(tmp_path):
    header = 'Properties=species:S:1:pos:R:3:forces:R:2 energy={energy} pbc="F F F"'
    text = frame() + "\n".join(
        " ".join(line.split()[:-1]) if k > 1 else line
        for k, line in enumerate(frame(header=header).splitlines())
    )
    with pytest.raises(DataError) as info:
        read_xyz(write(tmp_path, text + "\n"))
    assert "(3, 3)" in str(assert_error(info, file="bad.xyz", record=1, field="forces"))


def _xyz_module(tmp_path, train_text: str, **kwargs) -> MACEDataModule:
    train = write(tmp_path, train_text, "train.xyz")
    kwargs.setdefault("num_valid", 2)
    return MACEDataModule(
        dataset="xyz",
        train_file=str(train),
        r_max=4.0,
        e0s={"H": -13.6, "O": -2040.0},
        cache_dir=tmp_path / "cache",
        **kwargs,
    )


def test_missing_energy_in_training_data(tmp_path):
    no_energy = 'Properties=species:S:1:pos:R:3:forces:R:3 pbc="F F F"'
    text = "".join(frame(shift=k) for k in range(5)) + frame(header=no_energy) + frame()
    with pytest.raises(DataError) as info:
        _xyz_module(tmp_path, text).setup("fit")
    exc = assert_error(info, file="train.xyz", record=5, field="energy")
    assert "data.energy_key" in str(exc)


def test_wrong_energy_key_names_the_keys_the_file_has(tmp_path):
    text = "".join(frame(shift=k) for k in range(6))
    with pytest.raises(DataError) as info:
        _xyz_module(tmp_path, text, energy_key="REF_energy").setup("fit")
    exc = assert_error(info, file="train.xyz", record=0, field="REF_energy")
    assert "'energy'" in str(exc)


def test_missing_forces_in_training_data(tmp_path):
    no_forces = 'Properties=species:S:1:pos:R:3 energy={energy} pbc="F F F"'
    lines = frame(header=no_forces).splitlines()
    bad = "\n".join(lines[:2] + [" ".join(line.split()[:4]) for line in lines[2:]]) + "\n"
    text = frame() + frame() + bad + frame() + frame()
    with pytest.raises(DataError) as info:
        _xyz_module(tmp_path, text).setup("fit")
    assert_error(info, file="train.xyz", record=2, field="forces")


def test_test_file_with_forces_on_some_frames_only(tmp_path):
    no_forces = 'Properties=species:S:1:pos:R:3 energy={energy} pbc="F F F"'
    lines = frame(header=no_forces).splitlines()
    bad = "\n".join(lines[:2] + [" ".join(line.split()[:4]) for line in lines[2:]]) + "\n"
    test = write(tmp_path, frame() + bad, "test.xyz")
    module = _xyz_module(
        tmp_path, "".join(frame(shift=k) for k in range(6)), test_files={"t": str(test)}
    )
    with pytest.raises(DataError) as info:
        module.setup("fit")
    assert_error(info, file="test.xyz", record=1, field="forces")


def test_element_the_model_does_not_know(tmp_path):
    configs = read_xyz(write(tmp_path, frame() + frame(z=("O", "H", "F"))))
    check_elements(configs[:1], [1, 8])
    with pytest.raises(DataError) as info:
        check_elements(configs, [1, 8])
    assert "F (Z=9)" in str(assert_error(info, file="bad.xyz", record=1, field="atomic_numbers"))


def test_test_set_with_an_element_absent_from_training(tmp_path):
    test = write(tmp_path, frame() + frame(z=("O", "H", "F")), "test.xyz")
    module = _xyz_module(
        tmp_path, "".join(frame(shift=k) for k in range(6)), test_files={"t": str(test)}
    )
    with pytest.raises(DataError) as info:
        module.setup("fit")
    assert_error(info, file="test.xyz", record=1, field="atomic_numbers")


def test_empty_validation_split(tmp_path):
    module = _xyz_module(tmp_path, "".join(frame(shift=k) for k in range(6)))
    module.num_valid, module.valid_fraction = None, 0.1  # int(0.1 * 6) = 0 configurations
    with pytest.raises(DataError, match="validation split is empty"):
        module.setup("fit")


def test_missing_train_file_is_named(tmp_path):
    module = MACEDataModule(dataset="xyz", train_file=str(tmp_path / "nope.xyz"), r_max=4.0)
    with pytest.raises(MacelabError, match=r"nope\.xyz") as info:
        module.setup("fit")
    assert "data.train_file" in str(info.value)


# -- rMD17 npz and splits -------------------------------------------------------------------
def write_npz(path, n_frames=6, n_atoms=3, **override):
    rng = np.random.default_rng(0)
    arrays = {
        "nuclear_charges": np.array([8, 1, 1][:n_atoms]),
        "coords": rng.normal(size=(n_frames, n_atoms, 3)),
        "energies": rng.normal(size=n_frames),
        "forces": rng.normal(size=(n_frames, n_atoms, 3)),
    }
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def test_truncated_npz(tmp_path):
    path = write_npz(tmp_path / "rmd17_water.npz")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupted") as info:
        read_rmd17_npz(path)
    assert info.value.file.endswith("rmd17_water.npz")


def test_corrupted_npz_array(tmp_path):
    path = write_npz(tmp_path / "rmd17_water.npz")
    data = bytearray(path.read_bytes())
    start = data.index(b"forces.npy") + 200  # inside the forces array's data
    data[start : start + 40] = b"\xff" * 40
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as info:
        read_rmd17_npz(path)
    assert info.value.file.endswith("rmd17_water.npz")
    assert info.value.field == "forces"


def test_npz_missing_forces(tmp_path):
    path = write_npz(tmp_path / "rmd17_water.npz", forces=None)
    with pytest.raises(DataError) as info:
        read_rmd17_npz(path)
    assert_error(info, file="rmd17_water.npz", record=None, field="forces")


def test_npz_positions_forces_shape_mismatch(tmp_path):
    path = write_npz(tmp_path / "rmd17_water.npz", forces=np.zeros((6, 4, 3)))
    with pytest.raises(DataError) as info:
        read_rmd17_npz(path)
    exc = assert_error(info, file="rmd17_water.npz", record=None, field="forces")
    assert "(6, 3, 3)" in str(exc)


@pytest.mark.parametrize("field", ["coords", "energies", "forces"])
def test_npz_nan_or_inf(tmp_path, field):
    path = tmp_path / "rmd17_water.npz"
    write_npz(path)
    with np.load(path) as data:
        arrays = dict(data)
    arrays[field] = arrays[field].copy()
    arrays[field][4] = np.nan if field != "energies" else np.inf
    np.savez(path, **arrays)
    with pytest.raises(DataError) as info:
        read_rmd17_npz(path)
    assert_error(info, file="rmd17_water.npz", record=4, field=field)


def test_split_index_out_of_range(tmp_path):
    path = write(tmp_path, "0\n3\n6\n", "index_train_01.csv")
    with pytest.raises(DataError) as info:
        read_split_indices(path, num_frames=6)
    exc = assert_error(info, file="index_train_01.csv", record="line 3", field="index")
    assert "0 to 5" in str(exc)


def test_split_entry_not_an_integer(tmp_path):
    path = write(tmp_path, "0\n1.5\n", "index_test_01.csv")
    with pytest.raises(DataError) as info:
        read_split_indices(path, num_frames=6)
    assert_error(info, file="index_test_01.csv", record="line 2", field="index")


def test_split_repeats_an_index(tmp_path):
    path = write(tmp_path, "4\n1\n4\n", "index_test_01.csv")
    with pytest.raises(DataError) as info:
        read_split_indices(path, num_frames=6)
    assert_error(info, file="index_test_01.csv", record="line 3", field="index")


def test_empty_split_file(tmp_path):
    path = write(tmp_path, "\n", "index_test_01.csv")
    with pytest.raises(DataError, match="empty") as info:
        read_split_indices(path, num_frames=6)
    assert_error(info, file="index_test_01.csv", record=None, field="index")


def test_empty_split_from_the_protocol():
    with pytest.raises(ConfigError, match="at least 1"):
        mace_protocol_split(np.arange(10), num_train=10, num_valid=0, seed=0)
    with pytest.raises(ConfigError, match="exceeds"):
        mace_protocol_split(np.arange(10), num_train=9, num_valid=2, seed=0)


# -- atoms too close, miscounted frames, sizes, duplicates ----------------------------------
def test_coincident_atoms_in_training_data_name_file_record_and_atoms(tmp_path):
    coincident = frame().replace("0.9600 0.1000", "0.0000 0.0000")  # atom 1 onto atom 0
    text = "".join(frame(shift=k) for k in range(5)) + coincident + frame(shift=6)
    with pytest.raises(DataError) as info:
        _xyz_module(tmp_path, text).setup("fit")
    exc = assert_error(info, file="train.xyz", record=5, field="positions")
    assert "atoms 0 and 1 (O and H) are at the same position" in str(exc)
    assert "data.min_distance=0.3" in str(exc)


def test_close_atoms_in_a_test_file_and_the_threshold_option(tmp_path):
    close = frame().replace("0.9600 0.1000", "0.2000 0.0000")  # atom 1 at 0.2 Å of atom 0
    test = write(tmp_path, frame() + close, "test.xyz")
    text = "".join(frame(shift=k) for k in range(6))
    with pytest.raises(DataError) as info:
        _xyz_module(tmp_path, text, test_files={"t": str(test)}).setup("fit")
    exc = assert_error(info, file="test.xyz", record=1, field="positions")
    assert "0.2 Å apart" in str(exc)
    module = _xyz_module(tmp_path, text, test_files={"t": str(test)}, min_distance=0.1)
    module.setup("fit")  # a lower threshold lets the frame through
    assert len(module.test_datasets["t"]) == 2


def test_graph_of_one_structure_refuses_close_atoms():
    atoms = Atoms("OH2", positions=[[0, 0, 0], [0, 0, 0], [0.0, 0.96, 0.0]])
    with pytest.raises(AtomsTooCloseError, match="atoms 0 and 1"):
        atoms_to_graph(atoms, 4.0)
    assert atoms_to_graph(atoms, 4.0, min_distance=None).num_nodes == 3


def test_closest_distance_kept_from_the_neighbour_search_equals_the_edges(tmp_path):
    store = GraphStore.from_configurations(
        read_xyz(write(tmp_path, "".join(frame(shift=0.1 * k) for k in range(4)))), 4.0
    )
    kept = store.closest_distances().copy()
    np.testing.assert_allclose(kept, 0.96 * np.sqrt(1 + (0.1 / 0.96) ** 2), rtol=1e-12)
    del store.tensors["closest_distance"]  # a store saved before the field existed
    np.testing.assert_allclose(store.closest_distances(), kept, rtol=1e-12)


def test_frame_with_fewer_atom_lines_than_declared_is_blamed_on_itself(tmp_path):
    lines = (frame() + frame() + frame()).splitlines()
    del lines[4]  # frame 0 declares 3 atoms but has two atom lines
    with pytest.raises(DataError) as info:
        read_xyz(write(tmp_path, "\n".join(lines) + "\n"))
    exc = assert_error(info, file="bad.xyz", record=0, field="number of atoms")
    assert "line 1 declares 3 atoms but has only 2 atom line(s)" in str(exc)
    assert "line 5 reads '3'" in str(exc)


def test_frame_with_more_atom_lines_than_declared_is_blamed_on_itself(tmp_path):
    text = frame().replace("3\n", "2\n", 1) + frame()
    with pytest.raises(DataError) as info:
        read_xyz(write(tmp_path, text))
    exc = assert_error(info, file="bad.xyz", record=0, field="number of atoms")
    assert "declares 2 atoms but line 5 after them is another atom line" in str(exc)


def test_more_training_configurations_than_the_file_holds_says_both_numbers(tmp_path):
    text = "".join(frame(shift=k) for k in range(6))
    with pytest.raises(ConfigError) as info:
        _xyz_module(tmp_path, text, num_train=50).setup("fit")
    message = str(info.value)
    assert "data.num_train=50" in message and "it has 6 configurations" in message
    assert "leaving 4" in message  # num_valid=2 held out
    with pytest.raises(ConfigError, match=r"data.num_valid=6 .* holds only 6 configurations"):
        _xyz_module(tmp_path, text, num_valid=6).setup("fit")
    valid = write(tmp_path, frame() + frame(shift=9), "valid.xyz")
    module = _xyz_module(tmp_path, text, num_train=7, valid_file=str(valid))
    with pytest.raises(ConfigError, match=r"data.num_train=7 .*holds \(6\)"):
        module.setup("fit")


def _with_duplicates() -> str:
    """12 frames, 8 distinct: frames 8-11 repeat frames 0, 2, 4 and 0."""
    frames = [frame(shift=k) for k in range(8)]
    return "".join([*frames, frames[0], frames[2], frames[4], frames[0]])


def test_duplicate_frames_are_counted_and_never_split_into_train_and_validation(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="macelab.data.datamodule"):
        module = _xyz_module(tmp_path, _with_duplicates(), num_valid=3)
        module.setup("fit")
    assert "4 duplicate structure(s) kept (record 8 repeats record 0)" in caplog.text
    assert "4 duplicate structure(s)" in module.summary()
    train = {tuple(p) for g in module.train_dataset for p in [g.positions[0].tolist()]}
    valid = {tuple(p) for g in module.val_dataset for p in [g.positions[0].tolist()]}
    assert not train & valid
    assert len(valid) == 3  # data.num_valid counts distinct structures
    assert len(module.train_dataset) + len(module.val_dataset) == 12
    for seed in range(20):  # whatever the shuffle, copies stay on one side
        first = np.array([0, 1, 2, 3, 4, 5, 6, 7, 0, 2, 4, 0])
        train_idx, valid_idx = train_valid_split(12, seed=seed, num_valid=3, first=first)
        assert not set(first[train_idx]) & set(first[valid_idx])


def test_duplicate_frames_can_be_dropped(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="macelab.data.datamodule"):
        module = _xyz_module(tmp_path, _with_duplicates(), num_valid=2, drop_duplicates=True)
        module.setup("fit")
    assert "4 duplicate structure(s) dropped" in caplog.text
    assert len(module.train_dataset) + len(module.val_dataset) == 8


def test_a_file_without_duplicates_gets_mace_torch_split():
    plain = train_valid_split(50, seed=3, valid_fraction=0.1)
    grouped = train_valid_split(50, seed=3, valid_fraction=0.1, first=np.arange(50))
    for a, b in zip(plain, grouped, strict=True):
        np.testing.assert_array_equal(a, b)
