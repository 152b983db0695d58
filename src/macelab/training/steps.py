"""How one training step computes its loss and gradients: a small strategy object chosen
from the runtime plan (:func:`training_step_for`).

* :class:`EagerStep`: forward, forces and loss in eager PyTorch; Lightning runs the
  backward and zeroes the gradients.
* :class:`CapturedStep`: the whole step (forward, forces, loss, backward) replayed from a
  CUDA graph per shape bucket (``runtime.cuda_graphs``, :mod:`macelab.speed.train_step`) or
  traced into one Inductor program per bucket (``runtime.compile``,
  :mod:`macelab.speed.compiled_train`). Its weight gradients are already computed when it
  returns; the loss it returns is a leaf whose backward hook hands them to the parameters.
  So Lightning's own zeroing and backward run as for the eager step and put them in
  ``.grad`` (scaled by the backward's incoming gradient, and added to what is there under
  gradient accumulation), and the LightningModule needs no hooks of its own.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from macelab.errors import ConfigError
from macelab.runtime import RuntimePlan
from macelab.speed.compiled_train import CompiledTrainStep
from macelab.speed.train_step import Gradients, GraphedTrainStep


class EagerStep:
    """The reference step: Lightning differentiates the returned loss."""

    def __call__(self, module: Any, batch: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
        output = module(batch, training=True)
        return module.loss_fn(output, batch), output


class CapturedStep:
    """A graphed or compiled step (see the module docstring), built on first use and
    checked against what it cannot do."""

    def __init__(self, compile: bool, cuda_graphs: bool) -> None:
        self.compile = compile
        self.cuda_graphs = cuda_graphs
        # the runtime plan's key the messages name (the old training.* names map onto it)
        self.option = "runtime.compile" if compile else "runtime.cuda_graphs"
        self.step: GraphedTrainStep | CompiledTrainStep | None = None

    def __call__(self, module: Any, batch: Any) -> tuple[dict[str, Tensor], dict[str, Any]]:
        # Loss weights and the energy term's form are constants of a capture: stage two
        # captures its own graphs.
        weights = (*asdict(module.loss_fn.weights).values(), module.loss_fn.energy_per_atom)
        step = self._built(module)
        try:
            terms, output, grads = step.gradients(batch, key=weights)
        except ValueError as error:  # autocast met when the first step is traced
            if not self.compile:
                raise
            raise ConfigError(f"runtime.compile=true: {error}") from None
        loss = terms["loss"].detach().requires_grad_()
        loss.register_hook(_hand_over(step.parameters, grads))
        terms["loss"] = loss
        return terms, output

    def _built(self, module: Any) -> GraphedTrainStep | CompiledTrainStep:
        if self.step is None:
            self._check(module)
            if self.compile:
                try:
                    self.step = CompiledTrainStep(
                        module.model,
                        module.loss_fn,
                        compute_stress=module.compute_stress,
                        cuda_graphs=self.cuda_graphs,
                    )
                except ValueError as error:
                    raise ConfigError(
                        f"runtime.compile=true: {error}; or set runtime.compile=false."
                    ) from None
            else:
                self.step = GraphedTrainStep(
                    module.model, module.loss_fn, compute_stress=module.compute_stress
                )
        return self.step

    def _check(self, module: Any) -> None:
        problem = None
        if any(getattr(m, "edge_chunk", None) for m in module.model.modules()):
            # chunk boundaries are read on the host each step: no capture, no trace
            problem = "does not combine with runtime.edge_chunk (set runtime.edge_chunk=null)"
        elif self.cuda_graphs and module.device.type != "cuda":
            problem = f"needs a CUDA GPU, but the model is on {module.device}"
        elif module.trainer.world_size > 1:
            problem = "runs on one device, but this run uses DDP"
        elif str(module.trainer.precision).startswith("16"):
            problem = "does not combine with fp16 loss scaling (16-mixed)"
        if problem:
            raise ConfigError(
                f"{self.option}=true {problem}; set {self.option}=false "
                "(or train on one GPU in 32, 64 or bf16-mixed)."
            )


def _hand_over(parameters: list[Tensor], grads: Gradients) -> Callable[[Tensor], None]:
    """The backward hook of a captured step's loss: ``d(loss)/dW`` times the incoming
    gradient (1, or a loss scale, or 1/n under gradient accumulation) into each ``.grad``,
    added to what is there, as autograd would put it."""
    pairs = [(p, g) for p, g in zip(parameters, grads, strict=True) if g is not None]

    def hook(incoming: Tensor) -> None:
        if not pairs:
            return
        # one fused multiply: new tensors, so a CUDA graph's next replay cannot change them
        scaled = torch._foreach_mul([g for _, g in pairs], incoming.to(pairs[0][1].dtype))
        for (parameter, _), grad in zip(pairs, scaled, strict=True):
            parameter.grad = grad if parameter.grad is None else parameter.grad + grad

    return hook


def training_step_for(plan: RuntimePlan) -> EagerStep | CapturedStep:
    """The step strategy of ``plan`` (``compile`` and ``cuda_graphs``)."""
    if plan.compile or plan.cuda_graphs:
        return CapturedStep(plan.compile, plan.cuda_graphs)
    return EagerStep()
