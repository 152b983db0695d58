"""EMA arithmetic, its checkpoint round trip, and the optimiser's weight-decay groups."""

from __future__ import annotations

import pytest
import torch

from macelab.training.ema import ExponentialMovingAverage
from macelab.training.optim import OptimizerConfig, parameter_groups


def test_ema_follows_the_num_updates_schedule():
    module = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        module.weight.fill_(0.0)
    ema = ExponentialMovingAverage(module, decay=0.99)
    expected = 0.0
    for step in range(1, 30):
        with torch.no_grad():
            module.weight.fill_(float(step))
        ema.update(module)
        decay = min(0.99, (1 + step) / (10 + step))  # torch-ema, as mace-torch uses
        expected = decay * expected + (1 - decay) * step
    assert ema.shadow["weight"][0, 0].item() == pytest.approx(expected, rel=1e-6)


def test_ema_average_parameters_restores_the_training_weights():
    module = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(module, decay=0.5)
    original = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    ema.update(module)
    trained = {k: v.clone() for k, v in module.state_dict().items()}
    with ema.average_parameters(module):
        assert not torch.equal(module.weight, trained["weight"])
        assert not torch.equal(module.weight, original["weight"])
    assert torch.equal(module.weight, trained["weight"])


def test_ema_state_dict_round_trip():
    module = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(module, decay=0.9)
    for _ in range(3):
        with torch.no_grad():
            module.weight.mul_(1.1)
        ema.update(module)
    other = ExponentialMovingAverage(torch.nn.Linear(3, 2), decay=0.1)
    other.load_state_dict(ema.state_dict())
    assert other.num_updates == 3 and other.decay == 0.9
    assert torch.equal(other.shadow["weight"], ema.shadow["weight"])


def test_weight_decay_groups_follow_mace_torch():
    """Decay on the interactions' output linear and the product basis, not elsewhere."""
    linear = torch.nn.Linear

    class Product(torch.nn.Module):  # "update" cannot be a ModuleDict key
        def __init__(self) -> None:
            super().__init__()
            self.contraction = linear(2, 2)
            self.update = torch.nn.ModuleDict(
                {"linear": linear(2, 2), "self_connection": linear(2, 2)}
            )

    model = torch.nn.ModuleDict(
        {
            "embedding": linear(2, 2),
            "interactions": torch.nn.ModuleList(
                [torch.nn.ModuleDict({"linear_up": linear(2, 2), "linear": linear(2, 2)})]
            ),
            "products": torch.nn.ModuleList([Product()]),
            "readouts": torch.nn.ModuleList([linear(2, 1)]),
        }
    )
    groups = {g["name"]: g for g in parameter_groups(model, OptimizerConfig(weight_decay=1e-3))}
    decayed = {id(p) for p in groups["decay"]["params"]}
    assert groups["decay"]["weight_decay"] == 1e-3 and groups["no_decay"]["weight_decay"] == 0.0
    product = model["products"][0]
    for module in (
        model["interactions"][0]["linear"],
        product.contraction,
        product.update["linear"],
    ):
        assert id(module.weight) in decayed
    for module in (
        model["embedding"],
        model["interactions"][0]["linear_up"],
        product.update["self_connection"],
        model["readouts"][0],
    ):
        assert id(module.weight) not in decayed
