"""What prefix-shared generation and the captured decode loop share: the preallocated group KV
cache, the additive attention mask, and the sampling rules (temperature, top-k, top-p, min-p,
repetition penalty; transformers' meanings).

Imports only torch: ``generation`` (the eager loop) and ``decode`` (the captured step) both
import it, and neither imports the other at module level.
"""

from __future__ import annotations

from typing import Sequence

import torch

_NEG = torch.finfo(torch.float32).min


class GroupKVCache:
    """Preallocated keys/values, one (rows, kv_heads, max_len, head_dim) tensor pair per layer.

    Prefill writes the prompt's keys into the first row of each group (rows ``::group``);
    `share_prefix` copies them to the group's other rows; a decode step writes one column
    (``write_column``) for all rows and attends over the whole preallocated width (masked).
    Implements the ``update`` hook the transformers attention layers call.
    """

    def __init__(self, layers: int, rows: int, group: int, kv_heads: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device) -> None:
        shape = (rows, kv_heads, max_len, head_dim)
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(layers)]
        self.group = group
        self.write_column: torch.Tensor | None = None  # None while prefilling

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args, **kwargs):
        keys, values = self.keys[layer_idx], self.values[layer_idx]
        if self.write_column is None:
            width = key_states.shape[2]
            keys[:: self.group, :, :width] = key_states
            values[:: self.group, :, :width] = value_states
            return key_states, value_states
        keys.index_copy_(2, self.write_column, key_states)
        values.index_copy_(2, self.write_column, value_states)
        return keys, values

    def share_prefix(self, width: int) -> None:
        if self.group == 1:
            return
        for tensor in self.keys + self.values:
            grouped = tensor.view(-1, self.group, *tensor.shape[1:])
            grouped[:, 1:, :, :width] = grouped[:, :1, :, :width]

    def get_seq_length(self, layer_idx: int = 0) -> int:  # positions are always passed explicitly
        return 0


def layer_masks(config, mask: torch.Tensor):
    """The decoder's ``attention_mask`` argument for the additive 4-D ``mask``: a dict by layer type
    when ``config`` lists ``layer_types`` (transformers 5's per-layer-type masks, Qwen2 and
    Qwen2.5-Omni), else ``mask`` itself (a decoder with one attention kind that takes a prepared
    4-D mask as is, Qwen3-Omni's)."""
    types = getattr(config, "layer_types", None)
    return mask if types is None else {t: mask for t in set(types)}


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The additive attention mask of a boolean ``mask`` (True: attend): 0 where True, the
    dtype's lowest value where False; same shape, ``dtype``."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, torch.finfo(dtype).min)


def sample_next(logits: torch.Tensor, *, do_sample: bool, temperature: float, top_k: int, top_p: float,
                generator: torch.Generator | Sequence[torch.Generator] | None, min_p: float | None = None,
                repetition_penalty: float = 1.0, seen: torch.Tensor | None = None) -> torch.Tensor:
    """Next token per row: argmax when greedy, else a draw from softmax(logits / T) restricted to
    the top-k tokens, to the smallest set whose probability reaches top_p, then to the tokens whose
    probability is at least ``min_p`` times the row's largest. A list of B generators draws the rows
    in B equal consecutive groups, group b from ``generator[b]``.

    ``repetition_penalty`` (transformers' meaning, applied first, greedy too): the logits of the
    tokens marked in ``seen`` (rows, V) bool are divided by it when positive, multiplied when
    negative."""
    logits = sampling_logits(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                             min_p=min_p, repetition_penalty=repetition_penalty, seen=seen)
    if not do_sample:
        return logits.argmax(-1)
    probs = logits.softmax(-1)
    if isinstance(generator, (list, tuple)):  # one generator per prompt, each drawing for its group's rows
        groups = probs.split(probs.shape[0] // len(generator))
        return torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(groups, generator)]).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sampling_logits(logits: torch.Tensor, *, do_sample: bool, temperature: float, top_k: int, top_p: float,
                    min_p: float | None = None, repetition_penalty: float = 1.0,
                    seen: torch.Tensor | None = None) -> torch.Tensor:
    """The fp32 (rows, V) logits :func:`sample_next` draws from (softmax of them; tokens filtered
    out hold a large negative value), or takes the argmax of when greedy."""
    logits = logits.float()
    if repetition_penalty != 1.0:
        if seen is None:
            raise ValueError("repetition_penalty needs the tokens seen so far")
        penalised = torch.where(logits < 0, logits * repetition_penalty, logits / repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if not do_sample:
        return logits
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, _NEG)
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        drop = probs.cumsum(-1) - probs >= top_p  # mass before this token already reaches top_p
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, _NEG))
    if min_p is not None and min_p > 0.0:
        probs = logits.softmax(-1)
        # the most likely token always stays (its probability is the row's largest)
        logits = logits.masked_fill(probs < min_p * probs.max(-1, keepdim=True).values, _NEG)
    return logits
