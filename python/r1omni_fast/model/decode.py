"""The decode loop of :func:`r1omni_fast.model.generation.generate` as one static-shaped step.

After the eager prefill, every decode step does the same work on tensors whose shapes do not
change: sample the next token of each row from the last logits, record it, update the done flags,
then embed the tokens, run all layers over the preallocated `GroupKVCache` (one column written,
the whole width attended under an additive mask built from a device ``column_valid`` buffer),
the final norm and the LM head, and advance the positions, the cache column and the step counter,
all of them device tensors. The step never reads a value back to the host, so on CUDA it is
captured once per bucket as a ``torch.cuda.CUDAGraph`` and replayed; on the CPU the very same
function runs eagerly. The host reads the done flags every ``check_every`` steps only. Rows that
have ended keep their place: they still go through the layers (the shapes are static) but write
the pad token, and their ``produced`` count stops. The step's temporaries are allocated from the
graph's private memory pool at capture and reused by every replay; its inputs and outputs are
the static buffers of `DecodeLoop`.

Backends: the step calls what the eager loop calls (``llm.get_input_embeddings()``,
``llm.model(inputs_embeds=, position_ids=, cache=, attention_mask=layer_masks(config, mask))``,
``llm.lm_head``), and takes the step's positions from a buffer of any shape whose entries each
advance by one per token ((rows, 1) for 1-D rotary; (3, rows, 1) for 3-D rotary).

Bucket: (rows, cache width rounded up to :data:`WIDTH_MULTIPLE`, group, dtypes, sampling
settings, number of generators, the eos count, the shape of the position buffer, the weights'
addresses). Captured buckets are kept per model (at most :data:`MAX_CACHED_GRAPHS`, least
recently used first out), with their KV cache, so that a GRPO run captures a handful of graphs.

Sampling draws exactly what :func:`~r1omni_fast.model.sampling.sample_next` draws: for one
sample, ``torch.multinomial(probs, 1, generator=g)`` is computed by PyTorch as
``argmax(probs / q)`` with ``q = torch.empty_like(probs).exponential_(1, generator=g)`` (the
exponential-race form of the Gumbel trick); the step calls that same ``exponential_`` with the same
shapes, dtypes and generators in the same order, so the tokens and the generators' states are
those of the eager loop (tested). In a graph, each generator is a graph-owned
``torch.Generator`` registered with ``CUDAGraph.register_generator_state``: its Philox offset
advances at each replay exactly as an eager call would advance it, the caller's state is copied in
before the loop and back out after it. Steps run past the last row's end (up to
``check_every - 1`` of them) are undone on the generators: their states are restored to the start
of the last checked block and the draws of the steps that count are made again, so that a
generator left to the caller is where the eager loop leaves it.

Exactness: in fp32 the static loop's tokens equal the eager loop's and transformers' `generate`
(tested on the CPU; the CUDA tests are ``gpu``-marked). Its cache is wider than the eager loop's
(rounded up to :data:`WIDTH_MULTIPLE`; the extra columns are masked), so attention sums may be
reduced in a different order. In bf16 the captured loop equals the static loop run eagerly
token for token (same kernels, same widths). Against the eager loop, greedy tokens may differ
only where the two largest logits are within bf16 rounding of each other (a near-tie); the
``gpu`` test ``test_graph_bf16_ties`` checks exactly that.
"""

from __future__ import annotations

import collections
import contextlib
import weakref
from dataclasses import dataclass
from typing import Sequence

import torch

from r1omni_fast.model.sampling import GroupKVCache, additive_mask, layer_masks, sampling_logits

#: Cache widths of the static loop are rounded up to a multiple of this, so that prompts of
#: nearby lengths share one captured graph.
WIDTH_MULTIPLE = 64
#: Captured buckets kept per model (each holds its KV cache and its graph's memory pool).
MAX_CACHED_GRAPHS = 2

_GRAPHS: "weakref.WeakKeyDictionary[torch.nn.Module, collections.OrderedDict]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Sampling:
    """The sampling settings baked into a step (see :func:`sampling_logits`)."""

    do_sample: bool
    temperature: float
    top_k: int
    top_p: float
    min_p: float | None
    repetition_penalty: float


def default_generator(device: torch.device) -> torch.Generator:
    """The generator ``torch.multinomial(..., generator=None)`` draws from on ``device``."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def draw(probs: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """One token per row of ``probs`` (rows, V) fp32, equal to ``sample_next``'s multinomial draw:
    the rows are split into ``len(generators)`` equal consecutive groups, group b drawn from
    ``generators[b]`` as ``argmax(p / q)``, ``q ~ Exp(1)`` (PyTorch's own ``multinomial`` for one
    sample). Returns (rows,) int64."""
    if len(generators) == 1:
        return (probs / torch.empty_like(probs).exponential_(1, generator=generators[0])).argmax(-1)
    tokens = [(p / torch.empty_like(p).exponential_(1, generator=g)).argmax(-1)
              for p, g in zip(probs.split(probs.shape[0] // len(generators)), generators)]
    return torch.cat(tokens)


class DecodeLoop:
    """Static buffers, the KV cache and the decode step of one bucket.

    Buffers (device ``device``): ``logits`` (rows, V) fp32, the logits the next step samples from;
    ``position`` (the prefill's position tensor's shape, e.g. (rows, 1), or (3, rows, 1) for 3-D
    rotary), the positions of the next token, each advanced by one per step; ``column`` (1,) the
    cache column the next step writes; ``step`` (1,) the device step counter; ``column_valid``
    (rows, width) bool; ``done`` (rows,) bool; ``produced`` (rows,) int64; ``out`` (rows, width)
    int64; ``seen`` (rows, V) bool when a repetition penalty is set; ``eos`` (E,) int64 and ``pad``
    () int64. ``cache`` is the `GroupKVCache` the prefill writes into.

    ``capture=True`` (CUDA only) captures the step as a CUDA graph at construction (after a
    warm-up on a side stream); otherwise :meth:`step` runs eagerly.
    """

    def __init__(self, llm: torch.nn.Module, *, rows: int, group: int, width: int, vocab: int,
                 cache_dtype: torch.dtype, device: torch.device, sampling: Sampling, generators: int,
                 eos: int, position_shape: tuple[int, ...], capture: bool) -> None:
        cfg = llm.config
        if capture and device.type != "cuda":
            raise ValueError(f"a captured decode loop needs a CUDA device, got {device}")
        # a weak reference: the per-model cache of captured loops must not keep its model alive
        self._llm = weakref.ref(llm)
        self.rows, self.width, self.sampling = rows, width, sampling
        self.mask_dtype = cache_dtype
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.cache = GroupKVCache(cfg.num_hidden_layers, rows, group, cfg.num_key_value_heads, width, head_dim,
                                  cache_dtype, device)
        self.logits = torch.zeros(rows, vocab, dtype=torch.float32, device=device)
        self.position = torch.zeros(position_shape, dtype=torch.long, device=device)
        self.column = torch.zeros(1, dtype=torch.long, device=device)
        self.step_index = torch.zeros(1, dtype=torch.long, device=device)
        self.column_valid = torch.zeros(rows, width, dtype=torch.bool, device=device)
        self.done = torch.zeros(rows, dtype=torch.bool, device=device)
        self.produced = torch.zeros(rows, dtype=torch.long, device=device)
        self.out = torch.zeros(rows, width, dtype=torch.long, device=device)
        self.seen = (torch.zeros(rows, vocab, dtype=torch.bool, device=device)
                     if sampling.repetition_penalty != 1.0 else None)
        self.eos = torch.full((eos,), -1, dtype=torch.long, device=device)
        self.pad = torch.zeros((), dtype=torch.long, device=device)
        # the generators a step draws from: the caller's when eager, graph-owned ones when captured
        self.generators: list[torch.Generator] = []
        self.graph: torch.cuda.CUDAGraph | None = None
        if capture:
            self._capture(generators)

    @property
    def llm(self) -> torch.nn.Module:
        llm = self._llm()
        if llm is None:
            raise RuntimeError("decode loop: its model no longer exists")
        return llm

    # ------------------------------------------------------------------ the step
    def step(self) -> None:
        """One decode step on the buffers (no host synchronisation, no shape change)."""
        s = self.sampling
        logits = sampling_logits(self.logits, do_sample=s.do_sample, temperature=s.temperature, top_k=s.top_k,
                                 top_p=s.top_p, min_p=s.min_p, repetition_penalty=s.repetition_penalty,
                                 seen=self.seen)
        token = draw(logits.softmax(-1), self.generators) if s.do_sample else logits.argmax(-1)
        token = token.masked_fill(self.done, self.pad)  # ended rows keep their place and write pad
        if self.seen is not None:
            self.seen.scatter_(1, token[:, None], True)
        self.out.index_copy_(1, self.step_index, token[:, None])
        self.produced += (~self.done).long()
        self.done |= (token[:, None] == self.eos[None]).any(-1)
        self.column_valid.index_fill_(1, self.column, True)
        self.cache.write_column = self.column
        mask = additive_mask(self.column_valid[:, None, None, :], self.mask_dtype)
        hidden = self.llm.model(inputs_embeds=self.llm.get_input_embeddings()(token)[:, None],
                                position_ids=self.position, cache=self.cache, use_cache=True,
                                attention_mask=layer_masks(self.llm.config, mask)).last_hidden_state
        self.logits.copy_(self.llm.lm_head(hidden[:, -1]))
        self.position += 1
        self.column += 1
        self.step_index += 1

    def draw_only(self) -> None:
        """The random draws of one step and nothing else (to replay a generator's stream)."""
        if self.sampling.do_sample:
            draw(torch.zeros_like(self.logits), self.generators)

    def _capture(self, generators: int) -> None:
        device = self.logits.device
        self.generators = [torch.Generator(device=device) for _ in range(generators)] if self.sampling.do_sample else []
        autocast = (torch.autocast("cuda", dtype=torch.get_autocast_dtype("cuda"), cache_enabled=False)
                    if torch.is_autocast_enabled("cuda") else contextlib.nullcontext())
        self.column.fill_(self.width - 1)  # the warm-up writes a column that no prompt reads before rewriting it
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side), autocast:
            for _ in range(2):
                self.step()
                self.column.fill_(self.width - 1)
                self.step_index.zero_()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        for g in self.generators:
            graph.register_generator_state(g)
        with torch.cuda.graph(graph), autocast:
            self.step()
        self.graph = graph

    # ------------------------------------------------------------------ one generation
    def run(self, *, logits: torch.Tensor, column_valid: torch.Tensor, position: torch.Tensor,
            seen: torch.Tensor | None, generators: Sequence[torch.Generator], eos: torch.Tensor,
            pad_token_id: int, prompt_width: int, max_new_tokens: int,
            check_every: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Decode from the prefill's ``logits`` (rows, V) after the prefill wrote ``self.cache``.

        ``column_valid`` (rows, prompt_width + max_new_tokens) bool, ``position`` the first new
        token's positions, ``seen`` (rows, V) bool or None, ``generators`` (one, or one per equal
        group of rows; empty when greedy), ``eos`` (E,) int64. The host reads the done flags after
        every ``check_every`` steps. Returns ``(out (rows, steps) int64, produced (rows,) int64,
        steps)``, as the eager loop of ``generate`` does, and leaves ``generators`` in the state
        the eager loop leaves them in."""
        total = column_valid.shape[1]
        if total > self.width:
            raise ValueError(f"decode loop: {total} cache columns needed, the bucket holds {self.width}")
        self.logits.copy_(logits)
        self.column_valid.zero_()
        self.column_valid[:, :total] = column_valid
        self.position.copy_(position)
        self.column.fill_(prompt_width)
        self.step_index.zero_()
        self.done.zero_()
        self.produced.zero_()
        self.out.fill_(pad_token_id)
        self.pad.fill_(pad_token_id)
        self.eos.copy_(eos)
        if self.seen is not None:
            self.seen.copy_(seen)
        callers = list(generators)
        if self.graph is not None:
            for own, caller in zip(self.generators, callers):
                own.set_state(caller.get_state())
        else:
            self.generators = callers
        run_step = self.graph.replay if self.graph is not None else self.step
        start = 0
        while True:
            block = min(check_every, max_new_tokens - start)
            saved = [g.get_state() for g in self.generators]
            for _ in range(block):
                run_step()
            start += block
            if start >= max_new_tokens or bool(self.done.all()):
                break
        steps = int(self.produced.max())  # every row has ended by then, or steps == max_new_tokens
        if steps < start and self.generators:  # undo the draws of the steps past the last row's end
            for g, state in zip(self.generators, saved):
                g.set_state(state)
            for _ in range(steps - (start - block)):
                self.draw_only()
        if self.graph is not None:
            for own, caller in zip(self.generators, callers):
                caller.set_state(own.get_state())
        else:
            self.generators = []
        return self.out[:, :steps].clone(), self.produced.clone(), steps


def decode_loop(model, *, rows: int, group: int, total: int, vocab: int, cache_dtype: torch.dtype,
                device: torch.device, sampling: Sampling, generators: int, eos: int,
                position_shape: tuple[int, ...], capture: bool) -> DecodeLoop:
    """The `DecodeLoop` for this bucket: a new one when eager; when captured, the model's cached
    one (or a newly captured one, evicting the least recently used beyond
    :data:`MAX_CACHED_GRAPHS`). Its cache is ready for a prefill (``write_column`` None)."""
    width = -(-total // WIDTH_MULTIPLE) * WIDTH_MULTIPLE
    llm = model.llm
    make = lambda: DecodeLoop(llm, rows=rows, group=group, width=width, vocab=vocab, cache_dtype=cache_dtype,  # noqa: E731
                              device=device, sampling=sampling, generators=generators, eos=eos,
                              position_shape=position_shape, capture=capture)
    if not capture:
        return make()
    autocast = (torch.get_autocast_dtype("cuda") if torch.is_autocast_enabled("cuda") else None)
    key = (rows, group, width, vocab, cache_dtype, str(device), sampling, generators, eos, position_shape, autocast,
           tuple(p.data_ptr() for p in llm.parameters()))
    loops = _GRAPHS.setdefault(llm, collections.OrderedDict())
    loop = loops.pop(key, None)
    if loop is None:
        while len(loops) >= MAX_CACHED_GRAPHS:
            loops.popitem(last=False)
        loop = make()
    loops[key] = loop
    loop.cache.write_column = None
    return loop


def clear_graphs(model) -> None:
    """Drop the captured decode graphs (and their caches) kept for ``model``."""
    _GRAPHS.pop(model.llm, None)
