"""``MACEDataModule``: the benchmarks (and any xyz file) as a LightningDataModule.

Configured from ``conf/data/{acac,3bpa,rmd17,xyz}.yaml``. After ``setup()`` it exposes

* ``statistics``: the :class:`~macelab.data.statistics.DatasetStatistics` of the training
  split (element table, E0s, average number of neighbours, per-atom interaction energy mean
  and spread, RMS force), for ``macelab.model.build_model``;
* ``train_dataloader()``, ``val_dataloader()``, and ``test_dataloader()`` (a list, one loader
  per name in ``test_set_names``, same order);
* ``train_sampler``: the resumable sampler of the training loader (``.skip(n)`` resumes
  mid-epoch);
* ``summary()``: counts per split, labels, E0s and what is missing.

Every structure is checked for atoms closer than ``min_distance`` (0.3 Å; coincident atoms
make a model's energy NaN), and identical structures in the training file are counted and
logged, kept on one side of the train/validation split or dropped (``drop_duplicates``).

Distributed runs: the module builds its own samplers (``samplers.py``) from the attached
trainer's ``global_rank`` and ``world_size``, so the trainer runs with
``use_distributed_sampler=False``. Training: every rank a different, equally long slice of a
seeded shuffle. Validation and test: rank r gets samples r, r + w, ...: nothing lost, nothing
counted twice.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ase.data import chemical_symbols
from lightning import LightningDataModule
from torch_geometric.loader import DataLoader

from macelab.data.checks import (
    check_elements,
    check_min_distance,
    check_not_empty,
    require_labels,
)
from macelab.data.datasets import DATASETS
from macelab.data.datasets.base import DatasetParts, LoadOptions, MissingFile
from macelab.data.duplicates import count_shared, first_occurrences
from macelab.data.e0s import (
    e0s_from_isolated_atoms,
    e0s_from_mapping,
    e0s_least_squares,
    isolated_atom_mask,
)
from macelab.data.locate import data_root, where_to_get
from macelab.data.neighbors import DEFAULT_MIN_DISTANCE
from macelab.data.samplers import EvalSampler, ResumableTrainSampler
from macelab.data.splits import train_valid_split
from macelab.data.statistics import DatasetStatistics, compute_statistics
from macelab.data.store import GraphStore
from macelab.data.xyz import LabelKeys
from macelab.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_E0S = {"acac": "file", "3bpa": "file", "rmd17": "least_squares", "xyz": "file"}
DEFAULT_TRAIN_SET = {"acac": "300K", "3bpa": "300K"}


class MACEDataModule(LightningDataModule):
    """Training, validation and named test sets of one benchmark, as graphs.

    Args:
        dataset: ``acac``, ``3bpa``, ``rmd17`` or ``xyz``.
        root: the data root; ``None`` falls back to ``$MACELAB_DATA``, then to the packaged
            AcAc copy and the download cache.
        r_max: the graph cutoff in Å (the model's ``r_max``).
        batch_size: training batch size (per rank).
        valid_batch_size: validation and test batch size (per rank).
        seed: seeds the train/validation split and the training shuffle.
        num_workers: DataLoader worker processes.
        energy_key: the energy label's name in xyz files (mace-torch's option).
        forces_key: the forces label's name in xyz files.
        stress_key: the stress label's name in xyz files.
        e0s: ``file``, ``least_squares`` (alias ``average``) or a mapping ``{Z or symbol: eV}``;
            ``None`` picks the dataset's default (``file``; ``least_squares`` for rMD17).
        e0s_file: for ``xyz``: a file of isolated-atom configurations for ``e0s: file``.
        valid_fraction: fraction of the training file held out for validation (when there
            is no validation file and no ``num_valid``).
        num_train: explicit training set size (rMD17: 950 by default).
        num_valid: explicit validation set size (rMD17: 50 by default).
        train_set: ``300K`` / ``600K`` (acac) or ``300K`` / ``mixedT`` (3bpa).
        train_file: for ``xyz``: the user's training file.
        valid_file: for ``xyz``: the user's validation file (optional).
        test_files: for ``xyz``: a mapping from test-set name to file.
        molecule: for ``rmd17``: one of the ten molecules.
        split: for ``rmd17``: the published split, 1-5.
        cache_dir: downloads and graph cache (default ``$MACELAB_CACHE`` or
            ``~/.cache/macelab``).
        use_cache: keep processed graphs on disk.
        download: fetch missing official files (verified by checksum).
        pin_memory: DataLoader ``pin_memory``.
        drop_last: drop the last incomplete training batch (default: keep it).
        min_distance: Å; a structure with two atoms closer than this is refused, naming the
            file, the record and the atoms (``0`` or ``None``: no check).
        drop_duplicates: keep only the first of identical structures (same atomic numbers,
            positions, cell and pbc) in the training file; by default they are kept, each
            copy on the side of the train/validation split of its first occurrence.
    """

    def __init__(
        self,
        dataset: str = "acac",
        root: str | Path | None = None,
        r_max: float = 5.0,
        batch_size: int = 5,
        valid_batch_size: int = 10,
        seed: int = 0,
        num_workers: int = 0,
        energy_key: str = "energy",
        forces_key: str = "forces",
        stress_key: str = "stress",
        e0s: str | Mapping[Any, float] | None = None,
        e0s_file: str | None = None,
        valid_fraction: float | None = 0.1,
        num_train: int | None = None,
        num_valid: int | None = None,
        train_set: str | None = None,
        train_file: str | None = None,
        valid_file: str | None = None,
        test_files: Mapping[str, str] | Sequence[str] | None = None,
        molecule: str = "ethanol",
        split: int = 1,
        cache_dir: str | Path | None = None,
        use_cache: bool = True,
        download: bool = True,
        pin_memory: bool = False,
        drop_last: bool = False,
        min_distance: float | None = DEFAULT_MIN_DISTANCE,
        drop_duplicates: bool = False,
    ) -> None:
        super().__init__()
        if dataset not in DATASETS:
            raise ConfigError(
                f"data.dataset={dataset!r} is unknown; choose one of {', '.join(DATASETS)}."
            )
        self.dataset = dataset
        self.root = data_root(root)
        self.r_max = float(r_max)
        self.batch_size = int(batch_size)
        self.valid_batch_size = int(valid_batch_size)
        self.seed = int(seed)
        self.num_workers = int(num_workers)
        self.keys = LabelKeys(str(energy_key), str(forces_key), str(stress_key))
        self.e0s = DEFAULT_E0S[dataset] if e0s is None else e0s
        self.e0s_file = e0s_file
        self.valid_fraction = valid_fraction
        self.num_train = num_train
        self.num_valid = num_valid
        self.train_set = train_set or DEFAULT_TRAIN_SET.get(dataset)
        self.train_file = train_file
        self.valid_file = valid_file
        self.test_files = test_files
        self.molecule = molecule
        self.split = int(split)
        self.cache_dir = None if cache_dir in (None, "") else Path(cache_dir).expanduser()
        self.use_cache = bool(use_cache)
        self.download = bool(download)
        self.pin_memory = bool(pin_memory)
        self.drop_last = bool(drop_last)
        self.min_distance = float(min_distance or 0.0)
        self.drop_duplicates = bool(drop_duplicates)
        if self.r_max <= 0:
            raise ConfigError(f"data.r_max={r_max} must be positive (Å).")
        if not 0.0 <= self.min_distance < self.r_max:
            raise ConfigError(
                f"data.min_distance={min_distance} must be between 0 (no check) and "
                f"data.r_max={self.r_max} Å: pairs are found within the cutoff."
            )

        self.statistics: DatasetStatistics | None = None
        self.train_dataset: GraphStore | None = None
        self.val_dataset: GraphStore | None = None
        self.test_datasets: dict[str, GraphStore] = {}
        self.missing: list[MissingFile] = []
        self._parts: DatasetParts | None = None
        self._train_sampler: ResumableTrainSampler | None = None
        self._notes: dict[str, str] = {}

    # -- loading --------------------------------------------------------------------------
    def _options(self) -> LoadOptions:
        return LoadOptions(
            root=self.root,
            r_max=self.r_max,
            keys=self.keys,
            seed=self.seed,
            cache_dir=self.cache_dir,
            use_cache=self.use_cache,
            download=self.download,
        )

    def _load_parts(self) -> DatasetParts:
        if self._parts is None:
            module = DATASETS[self.dataset]
            options = self._options()
            if self.dataset in ("acac", "3bpa"):
                self._parts = module.load(options, train_set=self.train_set)
            elif self.dataset == "rmd17":
                self._parts = module.load(
                    options,
                    molecule=self.molecule,
                    split=self.split,
                    num_train=950 if self.num_train is None else self.num_train,
                    num_valid=50 if self.num_valid is None else self.num_valid,
                )
            else:
                self._parts = module.load(
                    options,
                    train_file=self.train_file,
                    valid_file=self.valid_file,
                    test_files=self.test_files,
                    e0s_file=self.e0s_file,
                )
        return self._parts

    def prepare_data(self) -> None:
        """Locate (download if needed) every file and fill the graph cache (rank 0 only)."""
        self._load_parts()

    def setup(self, stage: str | None = None) -> None:
        """Load the data, split it, compute the training statistics (once per process)."""
        if self.statistics is None:
            self._setup_data()
        self._sync_sampler_rank()

    def _setup_data(self) -> None:
        parts = self._load_parts()
        for store in (parts.train, parts.valid, *parts.tests.values()):
            if store is not None:
                check_min_distance(store, self.min_distance)
        isolated = isolated_atom_mask(parts.train)
        train_file = parts.train.select(np.flatnonzero(~isolated))
        isolated_in_train = parts.train.select(np.flatnonzero(isolated))
        check_not_empty(len(train_file), split="training", source=parts.train.source)
        require_labels(train_file, ("energy", "forces"), role="training", keys=self.keys)
        if parts.valid is not None:
            require_labels(parts.valid, ("energy", "forces"), role="validation", keys=self.keys)
        train_file, first = self._duplicates(train_file)
        train, valid = self._split(parts, train_file, first)
        self._report_shared(train, parts)
        if len(isolated_in_train):
            self._notes["isolated"] = (
                f"{len(isolated_in_train)} isolated-atom frame(s) of {parts.train.source} are "
                "not trained on" + (" (their energies are the E0s)" if self._e0s_from_file else "")
            )
            log.info("%s", self._notes["isolated"])
        for name, test in parts.tests.items():
            check_not_empty(len(test), split=f"test ({name})", source=test.source)
            require_labels(test, ("energy",), role="test", keys=self.keys)
        e0s, e0_source = self._resolve_e0s(parts, isolated_in_train, train)
        statistics = compute_statistics(train, e0s, e0_source=e0_source)
        for store in (valid, *parts.tests.values()):
            check_elements(store, statistics.atomic_numbers)
        self.train_dataset, self.val_dataset = train, valid
        self.test_datasets = dict(parts.tests)
        self.missing = list(parts.missing)
        self.statistics = statistics
        log.debug("%s", self.summary())

    def _duplicates(self, train_file: GraphStore) -> tuple[GraphStore, np.ndarray | None]:
        """Count identical structures of the training file, log them, drop them if asked.

        Returns the training file (without copies under ``drop_duplicates``) and each
        configuration's first identical copy (None when there are no copies left).
        """
        first = first_occurrences(train_file)
        copies = np.flatnonzero(first != np.arange(len(first)))
        if copies.size == 0:
            return train_file, None
        records = train_file.tensors["index"]
        copy, original = int(records[copies[0]]), int(records[first[copies[0]]])
        example = f"record {copy} repeats record {original}"
        if self.drop_duplicates:
            note = f"{copies.size} duplicate structure(s) dropped ({example})"
            self._notes["duplicates"] = note
            log.warning("%s: %s (data.drop_duplicates=true)", train_file.source, note)
            return train_file.select(np.flatnonzero(first == np.arange(len(first)))), None
        note = (
            f"{copies.size} duplicate structure(s) kept ({example}); copies stay on one side "
            "of the train/validation split"
        )
        self._notes["duplicates"] = note
        log.warning("%s: %s; data.drop_duplicates=true removes them", train_file.source, note)
        return train_file, first

    def _report_shared(self, train: GraphStore, parts: DatasetParts) -> None:
        """Warn about validation or test structures that are also training structures."""
        others = {"validation": parts.valid, **{f"test {k}": v for k, v in parts.tests.items()}}
        for name, store in others.items():
            if store is None or store.source == train.source:
                continue
            shared = count_shared(store, train)
            if shared:
                log.warning(
                    "%d of the %d %s structures (%s) are also in the training set (%s); "
                    "their errors measure memory, not generalisation.",
                    shared,
                    len(store),
                    name,
                    store.source,
                    train.source,
                )

    def _split(
        self, parts: DatasetParts, train_file: GraphStore, first: np.ndarray | None = None
    ) -> tuple[GraphStore, GraphStore]:
        source = train_file.source
        if parts.valid is None:
            train_idx, valid_idx = train_valid_split(
                len(train_file),
                seed=self.seed,
                valid_fraction=self.valid_fraction,
                num_valid=self.num_valid,
                num_train=self.num_train,
                source=source,
                first=first,
            )
            self._notes["train"] = f"{len(train_idx)} of {len(train_file)}, seed {self.seed}"
            self._notes["valid"] = f"{len(valid_idx)} of {len(train_file)}, seed {self.seed}"
            return train_file.select(train_idx), train_file.select(valid_idx)
        check_not_empty(len(parts.valid), split="validation", source=parts.valid.source)
        if self.dataset != "rmd17" and self.num_train is not None:
            if not 0 < self.num_train <= len(train_file):
                raise ConfigError(
                    f"data.num_train={self.num_train} asks for more training configurations "
                    f"than {source} holds ({len(train_file)}); set it between 1 and "
                    f"{len(train_file)} (or null for all of them)."
                    if self.num_train > 0
                    else f"data.num_train={self.num_train} must be at least 1."
                )
            order = np.random.default_rng(self.seed).permutation(len(train_file))
            train_file = train_file.select(np.sort(order[: self.num_train]))
        return train_file, parts.valid

    @property
    def _e0s_from_file(self) -> bool:
        return not isinstance(self.e0s, Mapping) and str(self.e0s).strip().lower() in (
            "file",
            "isolated_atoms",
        )

    def _resolve_e0s(
        self, parts: DatasetParts, isolated_in_train: GraphStore, train: GraphStore
    ) -> tuple[dict[int, float], str]:
        choice = self.e0s
        if isinstance(choice, Mapping):
            return e0s_from_mapping(choice), "config"
        name = str(choice).strip().lower()
        if name in ("least_squares", "average"):
            return e0s_least_squares(train, train.elements()), "least_squares"
        if name not in ("file", "isolated_atoms"):
            raise ConfigError(
                f"data.e0s={choice!r}: use 'file' (isolated-atom configurations), "
                "'least_squares', or a mapping {Z or symbol: eV}."
            )
        e0s: dict[int, float] = {}
        sources = [s for s in (parts.isolated_atoms, isolated_in_train) if s is not None and len(s)]
        if not sources:
            raise ConfigError(
                f"data.e0s=file, but {parts.train.source} has no isolated-atom configurations "
                "(config_type=IsolatedAtom) and no E0 file was given. Set data.e0s_file, give "
                "data.e0s as a mapping {Z: eV}, or set data.e0s=least_squares (fine-tuning: "
                "or pretrained.refit_e0s=false, which keeps the pretrained model's E0s)."
            )
        for store in sources:
            e0s.update(e0s_from_isolated_atoms(store))
        return e0s, "file"

    # -- samplers and loaders -------------------------------------------------------------
    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(getattr(trainer, "global_rank", 0)), int(getattr(trainer, "world_size", 1))

    def _require_setup(self) -> None:
        if self.statistics is None:
            raise RuntimeError("call datamodule.setup() before asking for data loaders")

    @property
    def train_sampler(self) -> ResumableTrainSampler:
        """The training loader's sampler (one object for the module's life; ``skip`` works)."""
        self._require_setup()
        if self._train_sampler is None:
            rank, world = self._rank_and_world()
            self._train_sampler = ResumableTrainSampler(
                len(self.train_dataset), shuffle=True, seed=self.seed, rank=rank, world_size=world
            )
        return self._train_sampler

    def resume_training_at(self, epoch: int, batches_done: int) -> None:
        """Make the next training epoch continue ``epoch`` after ``batches_done`` batches.

        Called by the LightningModule when it restores a mid-epoch checkpoint: the sampler
        replays that epoch's permutation and skips the ``batches_done * batch_size`` samples
        this rank already consumed.
        """
        sampler = self.train_sampler
        sampler.set_epoch(int(epoch))
        sampler.skip(min(int(batches_done) * self.batch_size, sampler.samples_per_rank))

    def _sync_sampler_rank(self) -> None:
        """Point the existing train sampler at this process's rank (after DDP has started)."""
        if self._train_sampler is not None:
            rank, world = self._rank_and_world()
            self._train_sampler.rank, self._train_sampler.world_size = rank, world

    @property
    def test_set_names(self) -> list[str]:
        """Names of the test sets, in the order of ``test_dataloader()``."""
        self._require_setup()
        return list(self.test_datasets)

    def _eval_loader(self, store: GraphStore) -> DataLoader:
        rank, world = self._rank_and_world()
        return DataLoader(
            store,
            batch_size=self.valid_batch_size,
            sampler=EvalSampler(len(store), rank=rank, world_size=world),
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        self._require_setup()
        self._sync_sampler_rank()
        return DataLoader(
            self.train_dataset,
            batch_size=self.batch_size,
            sampler=self.train_sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=self.pin_memory,
            drop_last=self.drop_last,
        )

    def val_dataloader(self) -> DataLoader:
        self._require_setup()
        return self._eval_loader(self.val_dataset)

    def test_dataloader(self) -> list[DataLoader]:
        self._require_setup()
        return [self._eval_loader(store) for store in self.test_datasets.values()]

    def check_elements(self, atomic_numbers: Sequence[int]) -> None:
        """Raise a ``DataError`` if any split holds an element outside ``atomic_numbers``.

        For evaluating a trained model: pass its element table.
        """
        self._require_setup()
        for store in (self.train_dataset, self.val_dataset, *self.test_datasets.values()):
            check_elements(store, atomic_numbers)

    # -- reporting ------------------------------------------------------------------------
    def summary(self) -> str:
        """Counts per split, labels, E0s and missing files, as a small table."""
        self._require_setup()
        parts = self._parts
        stats = self.statistics
        where = f"data root {self.root}" if self.root else "no data root (packaged copy / cache)"
        lines = [f"{parts.name}: r_max {self.r_max} Å, seed {self.seed}, {where}"]
        rows = [("train", self.train_dataset), ("valid", self.val_dataset)]
        rows += list(self.test_datasets.items())
        width = max(len(name) for name, _ in rows)
        for name, store in rows:
            labels = [k for k in ("energy", "forces", "stress") if store.tensors[f"has_{k}"].all()]
            note = self._notes.get(name, "")
            lines.append(
                f"  {name:<{width}}  {len(store):6d} configs  {int(store.num_atoms.sum()):8d} "
                f"atoms  {'+'.join(labels) or 'no labels':<20} {store.source}"
                + (f" ({note})" if note else "")
            )
        e0_text = ", ".join(
            f"{chemical_symbols[z]} {e:.6f}"
            for z, e in zip(stats.atomic_numbers, stats.atomic_energies, strict=True)
        )
        lines.append(f"  E0s ({stats.e0_source}, eV): {e0_text}")
        for key in ("isolated", "duplicates"):
            if key in self._notes:
                lines.append(f"  {self._notes[key]}")
        lines.append(
            f"  avg_num_neighbors {stats.avg_num_neighbors:.4f}; interaction energy per atom "
            f"mean {stats.mean_interaction_energy_per_atom:.6f} eV, std "
            f"{stats.std_interaction_energy_per_atom:.6f} eV; rms_forces "
            f"{stats.rms_forces:.6f} eV/Å"
        )
        target = self.root or "<data root>"
        for item in self.missing:
            lines.append(
                f"  missing test set {item.name}: {item.relpath} not found. "
                f"{where_to_get(item.relpath)} Put it at {target}/{item.relpath}."
            )
        return "\n".join(lines)
