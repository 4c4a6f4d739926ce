"""GRPO's reference model: the parts it holds of its own, TRL's ``sync_ref_model`` mixing, the
state a checkpoint keeps of it, and dropout switched off."""

from __future__ import annotations

import logging
from typing import Any, Dict

import torch

from r1omni_fast.train import distributed

log = logging.getLogger(__name__)


def reference_parts(ref: Any, policy: Any) -> Dict[str, torch.nn.Module]:
    """The reference's own (not shared) modules."""
    return {n: m for n, m in ref.named_children() if m is not policy._modules[n]}


def disable_dropout(model: torch.nn.Module) -> int:
    """TRL's ``disable_dropout``: ``p = 0`` in every ``torch.nn.Dropout`` module of ``model``.
    Returns how many modules it changed."""
    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0:
            module.p = 0.0
            changed += 1
    return changed


@torch.no_grad()
def sync_reference(ref: Any, model: Any, dist: distributed.Dist, alpha: float) -> None:
    """``ref <- alpha * policy + (1 - alpha) * ref`` over the reference's own parts (TRL)."""
    distributed.reshard(ref, dist)  # both sharded alike
    distributed.reshard(model, dist)
    for name, module in reference_parts(ref, model).items():
        for p_ref, p in zip(module.parameters(), getattr(model, name).parameters()):
            if p_ref is not p:  # a frozen tensor the reference shares stays as it is
                p_ref.mul_(1.0 - alpha).add_(p.detach(), alpha=alpha)



def reference_state(ref: Any, model: Any, dist: distributed.Dist) -> Dict[str, torch.Tensor]:
    """The reference's own tensors by ``<module>.<name>`` (what a checkpoint holds of a synced reference)."""
    distributed.reshard(ref, dist)
    return {f"{name}.{k}": v for name, m in reference_parts(ref, model).items()
            for k, v in m.state_dict().items()}



def load_reference_state(ref: Any, model: Any, state: Dict[str, torch.Tensor]) -> None:
    """Inverse of :func:`reference_state`; full tensors are spread over a sharded reference."""
    for name, module in reference_parts(ref, model).items():
        prefix = name + "."
        distributed.load_module_state(module, {k[len(prefix):]: v for k, v in state.items()
                                               if k.startswith(prefix)})
