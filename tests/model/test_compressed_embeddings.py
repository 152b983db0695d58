"""Compressed species embeddings (model.embedding=low_rank | int8).

low_rank: equivariance intact, full rank with identity factors equals the plain model
(self-connection included), parameter counts for 4 and 89 elements fall with the rank.
int8: equivariance intact, at most 255 levels per element row in every table, the stored
int8 tables dequantise to the weights the model computes with, the byte count, straight-
through gradients, a short training run on real data, element restriction and the refused
configurations (a rank with int8, export to mace-torch)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from macelab.errors import ConfigError
from macelab.model import MACE, build_model, compressed_table_bytes, int8_tables
from macelab.model.build import count_parameters
from macelab.model.compressed_tables import INT8_MAX
from tests.model.helpers import (
    ELEMENTS,
    batch,
    random_orthogonal,
    relative_error,
    silicon_cell,
    small_model,
)
from tests.training.conftest import TINY, compose_config  # noqa: F401 (fixture)


def _low_rank_copy_of(plain: MACE) -> MACE:
    """The plain model re-expressed at full rank: identity factors, the same tables."""
    rank = len(ELEMENTS)
    low = small_model(embedding="low_rank", embedding_rank=rank)
    state = plain.state_dict()
    with torch.no_grad():
        missing = low.load_state_dict(state, strict=False).missing_keys
        assert all(key.endswith("factors") for key in missing), missing
        # every table is factorised: embedding, each contraction, each self-connection
        assert "products.0.update.element_factors" in missing
        assert "products.1.update.element_factors" in missing
        for name, parameter in low.named_parameters():
            if name.endswith("factors"):
                parameter.copy_(torch.eye(rank, dtype=parameter.dtype))
    return low


def test_full_rank_with_identity_factors_is_the_plain_model():
    plain = small_model()
    low = _low_rank_copy_of(plain)
    inputs = batch([silicon_cell(0)])
    expected = plain(inputs, compute_forces=True)
    got = low(inputs, compute_forces=True)
    torch.testing.assert_close(got["energy"], expected["energy"], rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(got["forces"], expected["forces"], rtol=1e-12, atol=1e-12)


def test_self_connection_factors_reach_the_output():
    """The low-rank self-connection is used: changing its factors changes the energy."""
    model = small_model(embedding="low_rank", embedding_rank=2)
    inputs = batch([silicon_cell(0)])
    before = model(inputs)["energy"]
    with torch.no_grad():
        model.products[1].update.element_factors.mul_(2.0)
    assert not torch.allclose(model(inputs)["energy"], before, rtol=1e-9, atol=0)


COMPRESSED = {
    "low_rank_1": {"embedding": "low_rank", "embedding_rank": 1},
    "low_rank_2": {"embedding": "low_rank", "embedding_rank": 2},
    "int8": {"embedding": "int8"},
}


@pytest.mark.parametrize("settings", COMPRESSED.values(), ids=COMPRESSED.keys())
@pytest.mark.parametrize("seed", [0, 1])
def test_compressed_models_are_equivariant(settings, seed):
    """Rotations times an inversion (fp64): energies invariant, forces rotate."""
    model = small_model(**settings)
    atoms = silicon_cell(2)
    base = model(batch([atoms]), compute_forces=True)
    q = random_orthogonal(seed, reflect=True)
    moved = atoms.copy()
    moved.positions = atoms.positions @ q.T
    moved.cell = atoms.cell.array @ q.T
    out = model(batch([moved]), compute_forces=True)
    assert relative_error(out["energy"], base["energy"]) < 1e-12
    rotated = base["forces"] @ torch.as_tensor(q.T)
    assert relative_error(out["forces"], rotated) < 1e-10


def _count(num_elements: int, **options) -> int:
    model = MACE(
        atomic_numbers=list(range(1, num_elements + 1)),
        atomic_energies=[0.0] * num_elements,
        avg_num_neighbors=10.0,
        channels=32,
        max_L=1,
        correlation=3,
        **options,
    )
    return count_parameters(model)


def _self_connection_count(model: MACE) -> int:
    return sum(p.update.self_connection.weight.numel() for p in model.products)


def test_parameter_counts_shrink_with_rank_for_many_elements():
    """89 elements (a foundation-size table): rank 4 tables are a fraction of full ones,
    the self-connection included."""
    counts = {
        (n, rank): _count(
            n, **({} if rank is None else dict(embedding="low_rank", embedding_rank=rank))
        )
        for n in (4, 89)
        for rank in (None, 1, 2, 4)
    }
    assert counts[(89, 4)] < 0.2 * counts[(89, None)]
    assert counts[(89, 1)] < counts[(89, 2)] < counts[(89, 4)]
    assert counts[(4, 4)] > counts[(4, None)]  # no gain (factors only) at full rank
    assert _count(89, embedding="int8") == counts[(89, None)]  # same float masters


@pytest.mark.parametrize("rank", [1, 4])
def test_self_connection_weights_scale_with_rank(rank):
    """The self-connection's weights are those of a product with r attributes, not 89."""
    elements = list(range(1, 90))
    common = dict(atomic_numbers=elements, atomic_energies=[0.0] * 89, avg_num_neighbors=10.0)
    common |= dict(channels=8, max_L=1, correlation=2)
    full = MACE(**common)
    low = MACE(**common, embedding="low_rank", embedding_rank=rank)
    assert _self_connection_count(low) * 89 == _self_connection_count(full) * rank
    factors = sum(p.update.element_factors.numel() for p in low.products)
    assert factors == len(low.products) * 89 * rank


# ------------------------------------------------------------------------------------- int8


def _levels_per_row(table: torch.Tensor) -> list[int]:
    return [int(torch.unique(row).numel()) for row in table.reshape(table.shape[0], -1)]


def test_int8_tables_have_at_most_255_levels_per_element():
    """Every element row of every table the model computes with takes at most 2 * 127 + 1
    values, and the stored int8 tables dequantise to those weights exactly (fp64)."""
    model = small_model(embedding="int8")
    tables = int8_tables(model)
    for t, product in enumerate(model.products):
        for j, contraction in enumerate(product.contraction.contractions):
            for nu in contraction.weights:
                weights = contraction.element_weights(int(nu))  # [E, P, C]
                assert weights.shape[0] == len(ELEMENTS)
                assert max(_levels_per_row(weights)) <= 2 * INT8_MAX + 1
                assert not torch.equal(weights, contraction.weights[nu])  # rounded
                stored = tables[f"products.{t}.contraction.contractions.{j}.weights.{nu}"]
                assert stored.values.dtype == torch.int8
                assert stored.scales.dtype == torch.float32
                expected = weights.detach().reshape(len(ELEMENTS), -1)  # [E, P * C]
                torch.testing.assert_close(
                    stored.dequantize(torch.float64), expected, rtol=0, atol=0
                )
    for name, table in tables.items():
        assert table.values.shape[0] == len(ELEMENTS), name
        assert int(table.values.abs().max()) <= INT8_MAX
        assert max(_levels_per_row(table.values)) <= 2 * INT8_MAX + 1
    assert "embedding.linear.weight[0]" in tables
    assert "products.0.update.self_connection.weight[0]" in tables
    assert "products.1.update.self_connection.weight[0]" in tables


def test_int8_embedding_and_self_connection_use_the_rounded_tables():
    """The model with int8 tables is the full model whose tables are replaced by their
    dequantised int8 values (fp64, to rounding)."""
    quantized = small_model(embedding="int8")
    plain = small_model()
    plain.load_state_dict(quantized.state_dict())  # same layout as a full model
    tables = int8_tables(quantized)
    with torch.no_grad():
        for name, parameter in plain.named_parameters():
            if name in tables:  # W^(nu) [E, P, C]
                parameter.copy_(tables[name].dequantize(torch.float64).reshape(parameter.shape))
            elif f"{name}[0]" in tables:  # an e3nn block, one table per instruction
                module = plain.get_submodule(name.rsplit(".", 1)[0])
                axis = 0 if name.startswith("embedding") else 1
                pieces = []
                for i, view in enumerate(module.weight_views()):
                    rows = tables[f"{name}[{i}]"].dequantize(torch.float64)  # [E, k]
                    shape = view.movedim(axis, 0).shape
                    pieces.append(rows.reshape(shape).movedim(0, axis).reshape(-1))
                parameter.copy_(torch.cat(pieces))
    inputs = batch([silicon_cell(0)])
    expected = plain(inputs, compute_forces=True)
    got = quantized(inputs, compute_forces=True)
    torch.testing.assert_close(got["energy"], expected["energy"], rtol=1e-13, atol=1e-10)
    torch.testing.assert_close(got["forces"], expected["forces"], rtol=1e-12, atol=1e-12)
    full = small_model()(inputs)["energy"]  # and the rounding does change the model
    assert not torch.allclose(got["energy"], full, rtol=1e-9, atol=0)


def test_int8_gradients_pass_straight_through():
    """d(sum g * W_q)/dW = g: the rounding is the identity in the backward pass."""
    model = small_model(embedding="int8")
    contraction = model.products[0].contraction.contractions[1]
    weights = contraction.element_weights(2)
    upstream = torch.randn_like(weights)
    (grad,) = torch.autograd.grad((weights * upstream).sum(), contraction.weights["2"])
    torch.testing.assert_close(grad, upstream, rtol=0, atol=0)
    energy = model(batch([silicon_cell(0)]), compute_forces=False)["energy"].sum()
    energy.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name


def test_compressed_table_bytes():
    """int8 values + float32 scales per element row, against the same tables in float32."""
    model = small_model(embedding="int8")
    tables = int8_tables(model)
    values = sum(t.values.numel() for t in tables.values())
    rows = sum(t.values.shape[0] for t in tables.values())
    # each element table is a whole parameter or e3nn block of the full model
    per_element = model.embedding.linear.weight.numel()
    per_element += sum(p.update.self_connection.weight.numel() for p in model.products)
    per_element += sum(
        w.numel()
        for p in model.products
        for c in p.contraction.contractions
        for w in c.weights.values()
    )
    assert values == per_element
    sizes = compressed_table_bytes(model)
    assert sizes == {
        "values": values,
        "rows": rows,
        "int8": values,
        "scales": 4 * rows,
        "compressed": values + 4 * rows,
        "fp32": 4 * values,
    }
    assert sizes["compressed"] < 0.3 * sizes["fp32"]
    with pytest.raises(ValueError, match="embedding=int8"):
        compressed_table_bytes(small_model())


def test_int8_with_a_rank_is_refused():
    settings = dict(atomic_numbers=ELEMENTS, atomic_energies=[0.0] * 5, avg_num_neighbors=8.0)
    settings |= dict(scale=1.0, shift=0.0)
    with pytest.raises(ValueError, match=r"int8 .* takes no rank"):
        MACE(**settings, channels=4, embedding="int8", embedding_rank=4)
    with pytest.raises(ConfigError, match="embedding_rank=null"):
        build_model({**settings, "channels": 4, "embedding": "int8", "embedding_rank": 4})
    with pytest.raises(ConfigError, match="full, low_rank, int8"):
        build_model({**settings, "channels": 4, "embedding": "int4"})


@pytest.mark.parametrize("settings", COMPRESSED.values(), ids=COMPRESSED.keys())
def test_compressed_models_do_not_export_to_mace_torch(settings):
    from macelab.interop.mace_torch import to_mace_torch

    name = settings["embedding"]
    with pytest.raises(ConfigError, match=f"embedding={name}.*embedding=full"):
        to_mace_torch(small_model(channels=4, **settings))


@pytest.mark.parametrize("settings", COMPRESSED.values(), ids=COMPRESSED.keys())
def test_restricting_elements_of_compressed_models(settings):
    """pretrained.elements slices element rows (or factors) of every table: the predictions
    of structures of the kept elements stay (int8: to the float32 rounding of the scales,
    which a rescaled row re-derives)."""
    from macelab.training import finetune

    model = small_model(seed=3, **settings)
    subset = [6, 8, 14]
    restricted = finetune.restrict_elements(model, subset)
    assert restricted.atomic_numbers == subset
    assert count_parameters(restricted) < count_parameters(model)
    atoms = silicon_cell(1)
    atoms.numbers[atoms.numbers == 1] = 14
    inputs = batch([atoms])
    before = model(inputs, compute_forces=True)
    after = restricted(inputs, compute_forces=True)
    tolerance = 1e-6 if settings["embedding"] == "int8" else 1e-12
    torch.testing.assert_close(after["energy"], before["energy"], rtol=tolerance, atol=1e-8)
    torch.testing.assert_close(after["forces"], before["forces"], rtol=tolerance, atol=tolerance)


@pytest.mark.slow
def test_int8_training_run_on_real_data(compose_config, tmp_path):  # noqa: F811
    """A few quantisation-aware training steps through the real entry point: finite losses,
    the checkpoint restores an int8 model whose tables moved."""
    from macelab.train import run_training
    from macelab.training.checkpoint import load_model

    run = tmp_path / "run"
    overrides = [*TINY, "model.embedding=int8", "trainer.max_epochs=1"]
    overrides += ["trainer.log_every_n_steps=1"]
    metrics = run_training(compose_config("train", overrides, output_dir=run))
    assert metrics
    logged = pd.concat(pd.read_csv(p) for p in run.rglob("metrics.csv"))
    for column in ("train/loss", "val/loss"):
        values = logged[column].dropna()
        assert len(values) > 0 and all(math.isfinite(v) for v in values), column
    model, _ = load_model(next(run.rglob("last.ckpt")), use_ema=False)
    assert model.hyperparameters["embedding"] == "int8"
    assert compressed_table_bytes(model)["compressed"] > 0
    assert all(bool(torch.isfinite(p).all()) for p in model.parameters())
