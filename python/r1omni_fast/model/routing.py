"""MoE routing during a training forward: the routers' logits recorded by forward hooks, the
load-balancing auxiliary loss and the expert load computed from them.

A policy's ``routing()`` (part of the ``Policy`` protocol) is a context manager yielding a
:class:`RouterRecord`; a backend without MoE layers yields one with no routers
(``active`` False, ``aux_loss()`` None). The trainers open it around the policy's training forward
only (not around the backward: activation checkpointing would run the routers again), so that
the loss can take ``router_aux_loss_coef * aux_loss`` and the metrics the expert load.

Imports only torch.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch


class RouterRecord:
    """Router logits of the MoE layers ``routers`` (modules whose output is the logits (T, E), or a
    tuple starting with them, as transformers' top-k routers return) while the context is open.

    The routers run once per decoder pass, in layer order. ``expect(masks)`` gives the token masks
    of the coming passes, in call order (the backend knows its passes: a full forward, or a prompt
    pass then a completion pass); a pass with no mask given counts every token. A mask whose size
    differs from its pass's token count is a ValueError (nothing is paired silently)."""

    def __init__(self, routers: Sequence[torch.nn.Module] = (), num_experts: int = 0, top_k: int = 0) -> None:
        self.routers = list(routers)
        self.num_experts = int(num_experts)
        self.top_k = int(top_k)
        self._calls: list[torch.Tensor] = []
        self._masks: list[torch.Tensor | None] = []
        self._hooks: list[Any] = []

    @property
    def active(self) -> bool:
        """Whether the model has MoE routers (False: ``aux_loss()`` is None, ``expert_load()`` empty)."""
        return bool(self.routers)

    def __enter__(self) -> RouterRecord:
        def record(module, inputs, output):
            self._calls.append(output[0] if isinstance(output, tuple) else output)

        self._hooks = [r.register_forward_hook(record) for r in self.routers]
        return self

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def expect(self, masks: Sequence[torch.Tensor | None]) -> None:
        """The token masks (any shape, True / 1 = a real token) of the next decoder passes."""
        self._masks.extend(masks)

    def _layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per MoE layer: (router logits (T, E) of every pass, float mask (T,))."""
        n = len(self.routers)
        if len(self._calls) % n:
            raise ValueError(f"{len(self._calls)} router calls for {n} MoE layers: a decoder pass was cut short")
        passes = [self._calls[i:i + n] for i in range(0, len(self._calls), n)]
        if len(self._masks) > len(passes):
            raise ValueError(f"{len(self._masks)} token masks given for {len(passes)} decoder passes")
        logits: list[list[torch.Tensor]] = [[] for _ in range(n)]
        masks: list[torch.Tensor] = []
        for i, calls in enumerate(passes):
            rows = calls[0].shape[0]
            mask = self._masks[i] if i < len(self._masks) else None
            if mask is None:
                mask = torch.ones(rows, device=calls[0].device)
            mask = mask.reshape(-1).to(calls[0].device, torch.float32)
            if mask.numel() != rows:
                raise ValueError(f"decoder pass {i}: a token mask of {mask.numel()} entries for {rows} routed tokens")
            masks.append(mask)
            for layer, c in enumerate(calls):
                logits[layer].append(c)
        mask = torch.cat(masks)
        return [(torch.cat(per_layer), mask) for per_layer in logits]

    def aux_loss(self) -> torch.Tensor | None:
        """The load-balancing loss of Switch Transformer (arXiv 2101.03961, eqs. 4-6) as transformers'
        ``load_balancing_loss_func`` computes it over the layers: ``E * sum_e f_e * P_e`` with, over
        every layer's real tokens, ``f_e`` = top-k assignments to expert e / tokens and ``P_e`` = the
        mean softmax probability of e (fp32; differentiable through ``P``). None without routers."""
        if not self.active or not self._calls:
            return None
        assigned = probability = total = 0.0
        for logits, mask in self._layers():
            probs = torch.softmax(logits.float(), -1)
            chosen = torch.zeros_like(probs).scatter_(1, probs.topk(self.top_k, -1).indices, 1.0)
            assigned = assigned + (chosen * mask[:, None]).sum(0)
            probability = probability + (probs * mask[:, None]).sum(0)
            total = total + mask.sum()
        return self.num_experts * ((assigned / total) * (probability / total)).sum()

    def expert_load(self) -> dict[str, float]:
        """``expert_load_imbalance``: per MoE layer, ``E * max_e share_e`` with ``share_e`` the
        fraction of the layer's top-k assignments (real tokens) going to expert e, averaged over
        the layers: 1.0 is perfect balance, E every token on one expert. Empty without routers."""
        if not self.active or not self._calls:
            return {}
        values = []
        with torch.no_grad():
            for logits, mask in self._layers():
                counts = torch.zeros(self.num_experts, device=logits.device)
                counts.index_add_(0, logits.topk(self.top_k, -1).indices.reshape(-1),
                                  mask.repeat_interleave(self.top_k))
                values.append(float(self.num_experts * counts.max() / counts.sum().clamp(min=1.0)))
        return {"expert_load_imbalance": sum(values) / len(values)}


__all__ = ["RouterRecord"]
