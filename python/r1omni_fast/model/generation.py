"""Prefix-shared sampling for GRPO: each prompt is prefilled once, its KV cache is copied to
its G sample rows, and decoding runs over a cache preallocated at a fixed shape
(rows = B*G, columns = prompt + max_new_tokens), so a captured decode step can replace the
eager one without changing callers.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import transformers

from r1omni_fast.model.sampling import GroupKVCache, additive_mask, layer_masks, sample_next

@dataclass
class GenerationOutput:
    """``completion_ids`` (B*G, T) padded with the pad id after each row's end; ``lengths``
    (B*G,) tokens per completion including its EOS; ``texts`` decoded completions without the
    EOS (None without a tokenizer); ``prompt_index`` (B*G,) the prompt of each row (row b*G+g)."""

    completion_ids: torch.Tensor
    lengths: torch.Tensor
    texts: list[str] | None
    prompt_index: torch.Tensor


@torch.no_grad()
def generate(model, batch: dict, *, num_generations: int = 1, max_new_tokens: int = 64, do_sample: bool = True,
             temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, min_p: float | None = None,
             repetition_penalty: float = 1.0, eos_token_id: int | Sequence[int] | None = None, pad_token_id: int | None = None,
             seed: int | None = None, generator: torch.Generator | Sequence[torch.Generator] | None = None,
             share_prefix: bool = True, decode_loop: str = "eager", check_every: int = 8) -> GenerationOutput:
    """G completions per prompt of ``batch`` (as built by `OmniProcessor`).

    ``share_prefix=True`` prefills each prompt once (``model.prefill_rows`` grows by B) and copies
    its KV cache to the G rows; ``False`` prefills the B*G duplicated rows (the reference path).
    ``do_sample=False`` is greedy. ``seed`` seeds a private generator (or pass ``generator``: one
    for all rows, or a list of one per prompt, so that a prompt's samples do not depend on the
    other prompts of the batch). ``min_p`` and ``repetition_penalty`` as in transformers (see
    :func:`sample_next`; the penalty covers the prompt's text tokens and the tokens generated so
    far). Generation stops at max_new_tokens or when every row has produced an EOS.

    ``decode_loop``: ``"eager"`` (default) decodes with the loop below; ``"static"`` with the
    static-shaped step of :mod:`r1omni_fast.model.decode` run eagerly (any device); ``"graph"``
    with that step captured as a CUDA graph (CUDA only; ValueError elsewhere); ``"auto"`` is
    ``"graph"`` on CUDA, else ``"eager"``. All give the same tokens and leave the generators in
    the same state; the static loops check for the end every ``check_every`` steps.
    """
    if num_generations < 1 or max_new_tokens < 1:
        raise ValueError("num_generations and max_new_tokens must be >= 1")
    if do_sample and temperature <= 0:
        raise ValueError(f"temperature={temperature}: must be > 0 when sampling (use do_sample=False for greedy)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p={top_p}: must be in (0, 1]")
    if min_p is not None and not 0 <= min_p <= 1:
        raise ValueError(f"min_p={min_p}: must be in [0, 1]")
    if not repetition_penalty > 0:
        raise ValueError(f"repetition_penalty={repetition_penalty}: must be > 0")
    if decode_loop not in ("eager", "static", "graph", "auto"):
        raise ValueError(f"decode_loop={decode_loop!r}: use 'eager', 'static', 'graph' or 'auto'")
    if check_every < 1:
        raise ValueError(f"check_every={check_every}: must be >= 1")
    llm = model.llm
    cfg = llm.config
    if "cache" not in inspect.signature(type(llm.model).forward).parameters:
        raise RuntimeError(f"generate needs transformers >= 5 (its decoder's `cache` argument and per-layer-type "
                           f"masks); installed: {transformers.__version__}")
    if "sliding_attention" in getattr(cfg, "layer_types", []):
        raise NotImplementedError("generate: sliding-window attention layers are not supported")
    processor = model.processor
    if eos_token_id is None:
        if processor is None:
            raise ValueError("generate needs eos_token_id when the model has no processor")
        eos_token_id = processor.eos_token_ids
    eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id), device=model.device)
    if pad_token_id is None:
        pad_token_id = processor.tokenizer.pad_token_id if processor is not None else int(eos[0])
    if generator is None and seed is not None:
        generator = torch.Generator(device=model.device).manual_seed(seed)
    if isinstance(generator, (list, tuple)) and len(generator) != batch["input_ids"].shape[0]:
        raise ValueError(f"generator: got {len(generator)} generators for {batch['input_ids'].shape[0]} prompts")

    device = model.device
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch.get("attention_mask")
    attention_mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask.to(device)
    embeds, deepstack = model.prompt_inputs(batch)
    # Left-pack every prompt so that all rows end at the same column.
    valid = attention_mask.bool()
    lengths = valid.sum(1)
    width = int(lengths.max())
    order = torch.sort((~valid).long(), dim=1, stable=True).indices  # valid positions first, in order
    b = input_ids.shape[0]
    shift = (width - lengths)[:, None]
    cols = torch.arange(width, device=device)[None, :]
    src = order.gather(1, (cols - shift).clamp(min=0))
    key_valid = cols >= shift
    embeds = embeds.gather(1, src[..., None].expand(-1, -1, embeds.shape[-1])) * key_valid[..., None]
    if deepstack is not None:
        deepstack = deepstack.packed(src, key_valid)
    positions = (cols - shift).clamp(min=0)
    offsets = None
    rope = model.rope_positions(batch)
    if rope is not None:  # multimodal rotary positions (3, B, L) of the backend, packed like the embeddings
        rope_ids, offsets = rope
        positions = rope_ids.to(device).gather(2, src[None].expand(rope_ids.shape[0], -1, -1))

    g = num_generations
    rows = b * g
    if not share_prefix:
        embeds, key_valid = (t.repeat_interleave(g, 0) for t in (embeds, key_valid))
        positions = positions.repeat_interleave(g, positions.dim() - 2)  # (B, W) or (3, B, W)
        if deepstack is not None:
            deepstack = deepstack.repeat_rows(g)
    group = g if share_prefix else 1
    total = width + max_new_tokens
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    if decode_loop == "auto":
        decode_loop = "graph" if device.type == "cuda" else "eager"
    if decode_loop == "graph" and device.type != "cuda":
        raise ValueError(f"decode_loop='graph' needs a CUDA device (the model is on {device}): use 'static' or 'auto'")
    loop = None
    if decode_loop == "eager":
        cache = GroupKVCache(cfg.num_hidden_layers, rows, group, cfg.num_key_value_heads, total, head_dim,
                             embeds.dtype, device)
    else:
        from r1omni_fast.model import decode

        gens = [] if not do_sample else list(generator) if isinstance(generator, (list, tuple)) else [
            generator if generator is not None else decode.default_generator(device)]
        sampling = decode.Sampling(do_sample, temperature, top_k, top_p, min_p, repetition_penalty)
        loop = decode.decode_loop(model, rows=rows, group=group, total=total,
                                  vocab=llm.get_output_embeddings().weight.shape[0], cache_dtype=embeds.dtype,
                                  device=device, sampling=sampling, generators=len(gens), eos=eos.numel(),
                                  position_shape=(rows, 1), capture=decode_loop == "graph")  # next_position's shape
        cache = loop.cache

    causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
    prefill_mask = (causal[None] & key_valid[:, None, :]) | torch.eye(width, dtype=torch.bool, device=device)[None]
    hidden = llm.model(inputs_embeds=embeds, position_ids=positions, cache=cache, use_cache=True,
                       attention_mask=layer_masks(cfg, additive_mask(prefill_mask[:, None], embeds.dtype)),
                       **_deepstack_kwargs(deepstack)).last_hidden_state
    model.prefill_rows += embeds.shape[0]
    logits = llm.lm_head(hidden[:, -1])
    if share_prefix:
        cache.share_prefix(width)
        logits = logits.repeat_interleave(g, 0)
        key_valid = key_valid.repeat_interleave(g, 0)
    column_valid = torch.zeros(rows, total, dtype=torch.bool, device=device)
    column_valid[:, :width] = key_valid
    next_position = (lengths if offsets is None else lengths + offsets.to(device)).repeat_interleave(g, 0)[:, None].clone()

    out = torch.full((rows, max_new_tokens), pad_token_id, dtype=torch.long, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    produced = torch.zeros(rows, dtype=torch.long, device=device)
    seen = None
    if repetition_penalty != 1.0:  # the prompt's text tokens (media placeholders are negative ids)
        seen = torch.zeros(b, logits.shape[-1], dtype=torch.bool, device=device)
        text = valid & (input_ids >= 0) & (input_ids < logits.shape[-1])
        seen[torch.nonzero(text, as_tuple=True)[0], input_ids[text]] = True
        seen = seen.repeat_interleave(g, 0)
    steps = 0
    if loop is not None:  # the static step (captured on CUDA) replaces the loop below
        out, produced, steps = loop.run(logits=logits, column_valid=column_valid, position=next_position, seen=seen,
                                        generators=gens, eos=eos, pad_token_id=pad_token_id, prompt_width=width,
                                        max_new_tokens=max_new_tokens, check_every=check_every)
    for step in range(max_new_tokens if loop is None else 0):
        token = sample_next(logits, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
                            generator=generator, min_p=min_p, repetition_penalty=repetition_penalty, seen=seen)
        token = token.masked_fill(done, pad_token_id)
        if seen is not None:
            seen[torch.arange(rows, device=device), token] = True
        out[:, step] = token
        produced += (~done).long()
        done |= torch.isin(token, eos)
        steps = step + 1
        if bool(done.all()) or step == max_new_tokens - 1:
            break
        column = width + step
        column_valid[:, column] = True
        cache.write_column = torch.tensor([column], device=device)
        step_mask = additive_mask(column_valid[:, None, None, :], embeds.dtype)
        hidden = llm.model(inputs_embeds=llm.get_input_embeddings()(token)[:, None], position_ids=next_position,
                           cache=cache, use_cache=True, attention_mask=layer_masks(cfg, step_mask)).last_hidden_state
        logits = llm.lm_head(hidden[:, -1])
        next_position += 1
    out = out[:, :steps]
    texts = None
    if processor is not None:
        texts = []
        for row, n in zip(out.tolist(), produced.tolist()):
            ids = row[:n]
            if ids and ids[-1] in eos.tolist():
                ids = ids[:-1]
            texts.append(processor.decode(ids))
    prompt_index = torch.arange(b, device=device).repeat_interleave(g)
    return GenerationOutput(completion_ids=out, lengths=produced, texts=texts, prompt_index=prompt_index)


def completion_logits(model, prompts: dict, completion_ids: torch.Tensor,
                      mask: torch.Tensor, group: int, *, share_prefix: bool = True) -> torch.Tensor:
    """Logits (N, T, V) with ``logits[n, t]`` predicting ``completion_ids[n, t]``, N = B * group.

    The B left-padded prompts (media included) are embedded once. With ``share_prefix`` the LLM
    runs over each prompt once too: its keys/values are repeated for the group's rows (a
    differentiable copy, so the prompt's activations receive the gradient of all G samples) and
    the completions attend to them; the LM head runs over completion positions only. Without it
    (and under activation checkpointing, which forbids a cache in training) the prompt embeddings
    are repeated and the N full rows run through the LLM.
    """
    prompt_embeds, deepstack = model.prompt_inputs(prompts)
    token_embeds = model.llm.get_input_embeddings()(completion_ids).to(prompt_embeds.dtype)
    prompt_valid = prompts["attention_mask"].bool()
    width = completion_ids.shape[1]
    steps = torch.arange(width, device=prompt_valid.device)
    lengths = prompt_valid.long().sum(1)
    rope = model.rope_positions(prompts)
    rope_ids = None
    if rope is not None:  # the backend's multimodal rotary positions: (3, B, P) and each row's offset
        rope_ids, offsets = rope
        lengths = lengths + offsets.to(lengths.device)
    if not shares_prefix(model, share_prefix):
        embeds = torch.cat([prompt_embeds.repeat_interleave(group, 0), token_embeds], 1)
        attention = torch.cat([prompt_valid.long().repeat_interleave(group, 0), mask.long()], 1)
        extra = {}
        if rope_ids is not None:
            after = (lengths.repeat_interleave(group, 0)[:, None] + steps[None])[None].expand(rope_ids.shape[0], -1, -1)
            extra["position_ids"] = torch.cat([rope_ids.repeat_interleave(group, 1), after], 2)
        if deepstack is not None:
            extra["deepstack"] = deepstack.repeat_rows(group).extended(embeds.shape[1])
        return model(inputs_embeds=embeds, attention_mask=attention, logits_to_keep=width + 1, **extra).logits[:, :-1]

    from transformers import DynamicCache

    llm = model.llm
    b, p = prompt_valid.shape
    positions = (prompt_valid.long().cumsum(-1) - 1).clamp(min=0) if rope_ids is None else rope_ids
    causal = torch.ones(p, p, dtype=torch.bool, device=prompt_valid.device).tril()
    eye = torch.eye(p, dtype=torch.bool, device=prompt_valid.device)
    prefill_mask = additive_mask(((causal[None] & prompt_valid[:, None, :]) | eye[None])[:, None], prompt_embeds.dtype)
    cache = DynamicCache(config=llm.config)
    prefix = llm.model(inputs_embeds=prompt_embeds, position_ids=positions, cache=cache, use_cache=True,
                       attention_mask=layer_masks(llm.config, prefill_mask), **_deepstack_kwargs(deepstack)).last_hidden_state
    cache.batch_repeat_interleave(group)
    keys = torch.cat([prompt_valid.repeat_interleave(group, 0)[:, None, :].expand(-1, width, -1),
                      (steps[None, :] <= steps[:, None])[None].expand(b * group, -1, -1)], 2)
    lengths = lengths.repeat_interleave(group, 0)
    hidden = llm.model(inputs_embeds=token_embeds, position_ids=lengths[:, None] + steps[None], cache=cache,
                       use_cache=True, attention_mask=layer_masks(llm.config, additive_mask(keys[:, None], token_embeds.dtype))
                       ).last_hidden_state
    # the prompt's last position predicts the first completion token
    hidden = torch.cat([prefix[:, -1:].repeat_interleave(group, 0), hidden[:, :-1]], 1)
    return llm.lm_head(hidden)


def shares_prefix(model, share_prefix: bool = True) -> bool:
    """Whether :func:`completion_logits` runs a prompt pass then a completion pass (True) or one
    pass over the full rows (``share_prefix`` off, or activation checkpointing on)."""
    return share_prefix and not _checkpointing(model.llm)


def _deepstack_kwargs(deepstack) -> dict:
    """The decoder's DeepStack arguments of a prompt pass (none for a backend without them)."""
    return {} if deepstack is None else deepstack.decoder_kwargs()


def _checkpointing(llm) -> bool:
    # transformers 5 renamed the flag (the old name warns)
    if hasattr(type(llm), "is_activation_checkpointing"):
        return bool(llm.is_activation_checkpointing)
    return bool(getattr(llm, "is_gradient_checkpointing", False))


class PrefixSharedGeneration:
    """The sampling methods of the :class:`r1omni_fast.model.policy.Policy` interface, shared by
    the backends (a backend class lists it among its bases): :meth:`generate` and
    :meth:`completion_logits` over the backend's ``prompt_inputs`` / ``rope_positions`` / ``llm``."""

    def routing(self):
        """A context recording the MoE routers of a training forward
        (`r1omni_fast.model.routing.RouterRecord`): none here (a dense decoder)."""
        from r1omni_fast.model.routing import RouterRecord

        return RouterRecord()

    def prompt_inputs(self, batch: dict) -> tuple[torch.Tensor, Any]:
        """``(embeds, deepstack)``: the prompt embeddings (``embed_prompts``) and the
        `r1omni_fast.model.types.DeepstackFeatures` the decoder adds after its first layers (None:
        a backend whose decoder takes none; Qwen3-Omni's overrides this)."""
        return self.embed_prompts(batch), None

    def generate(self, batch: dict, **kwargs: Any) -> GenerationOutput:
        """Prefix-shared sampling of completions: :func:`generate` (its arguments)."""
        return generate(self, batch, **kwargs)

    def completion_logits(self, prompts: dict, completion_ids: torch.Tensor, mask: torch.Tensor, group: int, *,
                          share_prefix: bool = True) -> torch.Tensor:
        """(N, T, V) logits of sampled completions given their prompts (GRPO's policy and
        reference passes): :func:`completion_logits`."""
        return completion_logits(self, prompts, completion_ids, mask, group, share_prefix=share_prefix)
