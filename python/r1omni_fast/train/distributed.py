"""Training on several processes: torchrun launch, DDP or FSDP2, reductions, sharded checkpoints.

Launch (every rank runs the same command; torchrun sets RANK, WORLD_SIZE, LOCAL_RANK)::

    torchrun --nproc-per-node 8 -m r1omni_fast train --config FILE [--parallelism fsdp]

Contracts:

- Process group: ``nccl`` with CUDA (rank ``r`` on ``cuda:LOCAL_RANK``), ``gloo`` on the CPU; every
  collective times out after ``cfg.ddp_timeout`` seconds, so a rank that died or hangs ends the
  job with an error instead of a silent wait (torchrun also stops the other ranks as soon as one
  exits with an error).
- ``parallelism: ddp``: the model is replicated; the trainable gradients are averaged over the
  ranks in backward (``DistributedDataParallel``). ``parallelism: fsdp``: FSDP2
  (``fully_shard``) shards every LLM decoder layer and then the rest of the trainable model; the
  frozen towers are replicated (their parameters are left out of the root unit) or, with
  ``fsdp_shard_towers``, sharded one unit per tower. On CUDA with bf16, parameters are gathered
  in bf16 and gradients reduced in fp32 (``MixedPrecisionPolicy``).
- Generation under FSDP runs with every unit gathered once (:func:`gathered`): the ranks then
  decode any number of tokens without collectives, so ranks whose completions stop at different
  lengths never wait on each other.
- Checkpoints: ``checkpoint-N/dcp/`` holds the trainable model state and the optimizer state as a
  Distributed Checkpoint (each rank writes its shards; it loads at any number of ranks), beside
  the consolidated ``model.safetensors`` that rank 0 writes and ``OmniModel.from_pretrained`` loads
  in one process. The folder is filled under a temporary name and renamed by rank 0 only when
  every rank has finished (it assumes a filesystem that all ranks share).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, List, Optional, Sequence

import torch

from r1omni_fast.config import AnyConfig, ConfigError

log = logging.getLogger(__name__)

SHARDED_DIR = "dcp"


@dataclass
class Dist:
    """This process's place in the job (``world_size == 1``: a single process, no collective)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    parallelism: str = "none"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def fsdp(self) -> bool:
        return self.enabled and self.parallelism == "fsdp"

    def sum(self, values: Sequence[float]) -> List[float]:
        """Element-wise sum over the ranks (float64)."""
        if not self.enabled:
            return [float(v) for v in values]
        import torch.distributed as dist

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self._comm_device)
        dist.all_reduce(t)
        return t.tolist()

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist

        out: List[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def from_environment(cfg: AnyConfig) -> Dist:
    """Join the torchrun job described by the environment (``WORLD_SIZE`` > 1), else a single
    process, on the device ``cfg.device`` names: auto (CUDA when available, else CPU), cpu, cuda
    or cuda:N (one process only; under torchrun rank r takes cuda:LOCAL_RANK). Raises
    ConfigError naming the setting when it asks for CUDA and none is available."""
    from r1omni_fast.config import parse_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    setting = str(getattr(cfg, "device", "auto") or "auto")
    kind, index = parse_device(setting) or ("auto", None)
    cuda = torch.cuda.is_available()
    if kind == "cuda" and not cuda:
        raise ConfigError(f"device: {setting}: no CUDA device is available here (use --device cpu or auto)")
    if kind == "cuda" and index is not None:
        if world > 1:
            raise ConfigError(f"device: {setting}: under torchrun each rank uses cuda:LOCAL_RANK: set device: cuda")
        if index >= torch.cuda.device_count():
            raise ConfigError(f"device: {setting}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                              f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    cuda = cuda and kind != "cpu"
    if world <= 1:
        if index is not None:
            torch.cuda.set_device(index)
            return Dist(device=torch.device("cuda", index))
        return Dist(device=torch.device("cuda") if cuda else torch.device("cpu"))
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    try:
        rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    except (KeyError, ValueError):
        raise ConfigError(f"WORLD_SIZE={world} but RANK / LOCAL_RANK are missing or not integers "
                          f"(RANK={os.environ.get('RANK')!r}): launch with torchrun") from None
    device = torch.device("cpu")
    if cuda:
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo",
                                timeout=datetime.timedelta(seconds=cfg.ddp_timeout))
    if dist.get_world_size() != world:
        raise ConfigError(f"WORLD_SIZE={world} but the process group has {dist.get_world_size()} ranks")
    log.info("rank %d of %d on %s (%s)", rank, world, device, cfg.parallelism)
    return Dist(rank, world, local_rank, device, cfg.parallelism)


def shutdown(d: Dist) -> None:
    if d.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


def rank_slice(count: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s contiguous share of ``count`` items: the first ``count % world_size``
    ranks take one more than the others (sizes differ by at most one; nothing is dropped or
    repeated)."""
    base, extra = divmod(count, world_size)
    start = rank * base + min(rank, extra)
    return slice(start, start + base + (1 if rank < extra else 0))


# ------------------------------------------------------------------------------ wrapping


class CompletionLogits(torch.nn.Module):
    """``model.completion_logits`` as a module forward, so that DDP sees the GRPO policy pass."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, prompts: dict, completion_ids: torch.Tensor, mask: torch.Tensor, group: int) -> torch.Tensor:
        return self.model.completion_logits(prompts, completion_ids, mask, group)


def ddp(module: torch.nn.Module, d: Dist, cfg: AnyConfig) -> torch.nn.Module:
    """``DistributedDataParallel`` over ``module`` (its trainable parameters)."""
    import warnings

    from torch.nn.parallel import DistributedDataParallel

    # The projector's depthwise convolution weights (C, 1, k, k) get gradients whose stride on the
    # size-1 dimension differs from the parameter's: the same memory layout, which DDP still
    # reports as a stride mismatch.
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    ids = [d.device.index] if d.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=cfg.ddp_find_unused_parameters,
                                   gradient_as_bucket_view=True)


def _frozen_parts(model: torch.nn.Module) -> List[torch.nn.Module]:
    """Top-level children of ``model`` other than the LLM without a trainable parameter (towers,
    BERT gate; the LLM is always sharded, in the frozen reference too)."""
    return [m for m in model.children() if m is not model.llm
            and any(True for _ in m.parameters()) and not any(p.requires_grad for p in m.parameters())]


def fsdp(model: torch.nn.Module, d: Dist, cfg: AnyConfig, *, use_bf16: bool) -> torch.nn.Module:
    """FSDP2 over ``model`` (an OmniModel or a reference view of one), in place.

    Units: each LLM decoder layer; with ``cfg.fsdp_shard_towers`` each layer of the frozen parts'
    layer stacks (SigLIP, Whisper and BERT encoder layers); then the root (embeddings, norm, LM
    head, projectors). Frozen parameters outside those units are left out of the root unit:
    every rank keeps them whole. ``generate`` and
    ``completion_logits`` run the root's FSDP hooks like ``forward``.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    mp = MixedPrecisionPolicy()
    if use_bf16 and d.device.type == "cuda":
        mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    for layer in model.llm.model.layers:
        fully_shard(layer, mp_policy=mp)
    ignored = set()
    for part in _frozen_parts(model):
        if cfg.fsdp_shard_towers:  # each layer of the part's outermost layer stacks is a unit
            inside: set = set()
            for stack in [m for m in part.modules() if isinstance(m, torch.nn.ModuleList)]:
                for layer in stack:
                    if id(layer) not in inside:
                        fully_shard(layer, mp_policy=mp)
                        inside.update(id(m) for m in layer.modules())
        sharded = {id(p) for m in part.modules() if _is_fsdp(m) for p in m.parameters()}
        ignored.update(p for p in part.parameters() if id(p) not in sharded)  # kept whole on every rank
    fully_shard(model, mp_policy=mp, ignored_params=ignored or None)
    for name in ("generate", "completion_logits"):
        register_fsdp_forward_method(model, name)
    return model


def _is_fsdp(module: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def _fsdp_units(model: torch.nn.Module) -> List[Any]:
    return [m for m in model.modules() if _is_fsdp(m)]


@contextlib.contextmanager
def gathered(model: torch.nn.Module, d: Dist) -> Iterator[None]:
    """Within the block every FSDP unit of ``model`` stays gathered (one all-gather each, in the
    same order on every rank), so forwards need no collective; resharded on exit. A no-op
    without FSDP. Every rank must enter it together."""
    units = _fsdp_units(model) if d.fsdp else []
    if not units:
        yield
        return
    for unit in units:
        unit.unshard()
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in units:
            unit.set_reshard_after_forward(unit is not model, recurse=False)
            unit.reshard()


def reshard(model: torch.nn.Module, d: Dist) -> None:
    """Free the gathered parameters of every FSDP unit of ``model`` (a root unit keeps them after
    a forward without backward, e.g. the reference pass); local, no collective."""
    if d.fsdp:
        for unit in _fsdp_units(model):
            unit.reshard()


@contextlib.contextmanager
def accumulating(module: torch.nn.Module, d: Dist, last: bool) -> Iterator[None]:
    """Gradient accumulation: skip the gradient reduction of every micro-batch but the last."""
    if not d.enabled or last:
        if d.fsdp:
            module.set_requires_gradient_sync(True)
        yield
        return
    if d.fsdp:
        module.set_requires_gradient_sync(False)
        yield
    else:
        with module.no_sync():
            yield


def grad_norm_value(norm: torch.Tensor) -> float:
    """A (possibly DTensor) total norm as a float."""
    full = getattr(norm, "full_tensor", None)
    return float(full() if full is not None else norm)


# ------------------------------------------------------------------------------ checkpoints


def _options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(ignore_frozen_params=True, **kw)


def save_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 states: Optional[dict] = None) -> None:
    """Trainable model state and optimizer state, and the named state dicts ``states``, as a
    Distributed Checkpoint in ``folder/dcp`` (every rank calls it; each writes its own shards,
    replicated tensors once)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from r1omni_fast.train.checkpoint import write_manifest

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    dcp.save({"model": model_state, "optim": optim_state, **(states or {})},
             checkpoint_id=str(Path(folder) / SHARDED_DIR))
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        write_manifest(Path(folder) / SHARDED_DIR)  # every rank's files are written when save returns


def load_sharded_states(folder: Path, states: dict) -> None:
    """Fill the named state dicts ``states`` (their tensors, plain or sharded, in place) from the
    Distributed Checkpoint in ``folder/dcp``, through ``checkpoint.safe_dcp_reader``: its manifest
    checked first, nothing unpickled but DCP's metadata classes (a refused file is a
    ``ResumeError`` naming it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    from r1omni_fast.train.checkpoint import ResumeError

    from r1omni_fast.train.checkpoint import safe_dcp_reader

    try:
        reader, planner = safe_dcp_reader(Path(folder) / SHARDED_DIR)
        single = not torch.distributed.is_initialized()  # one process: no process group
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # as meant
            dcp.load(states, storage_reader=reader, planner=planner, no_dist=single)
    except (Exception, CheckpointException) as exc:  # DCP's own wrapper is a BaseException
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ResumeError(f"cannot load the sharded checkpoint {Path(folder) / SHARDED_DIR}: {reason}; "
                          f"delete {folder} to resume from the checkpoint before it") from exc


def load_module_state(module: torch.nn.Module, state: dict) -> None:
    """``module.load_state_dict(state)`` where ``module`` may be sharded and ``state`` holds full
    tensors (each rank keeps its shard) or tensors sharded like the module."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    full = not any(hasattr(v, "device_mesh") for v in state.values())
    if full and not any(_is_fsdp(m) for m in module.modules()):
        module.load_state_dict(state)
        return
    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=full))


def load_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Inverse of :func:`save_sharded`, at any number of ranks (one process included)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer, options=_options())
    state = {"model": model_state, "optim": optim_state}
    load_sharded_states(folder, state)
    # the frozen parameters are not in the checkpoint: they came with the model's weights
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"],
                   options=_options(strict=False))


def load_full_optimizer(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """A single process's ``optimizer.pt`` (parameters numbered in ``model``'s trainable order)
    into an optimizer over a replicated or sharded ``model``."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    saved = torch.load(path, weights_only=True)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    full = {"state": {names[int(i)]: s for i, s in saved["state"].items()},
            "param_groups": [dict(g, params=[names[int(i)] for i in g["params"]]) for g in saved["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, full, options=_options(full_state_dict=True))


def full_state_dict(model: torch.nn.Module, d: Dist) -> Optional[dict]:
    """The whole model state on rank 0 (None elsewhere): gathered from the shards under FSDP
    (every rank must call it), the module's own otherwise."""
    if not d.fsdp:
        return dict(model.state_dict()) if d.is_main else None
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if d.is_main else None


def export_model(model: Any, folder: Path, d: Dist) -> None:
    """The consolidated model (``save_pretrained``: model.safetensors, config, tokenizer) written
    by rank 0 into ``folder``; a collective under FSDP. A model with LoRA adapters writes its
    adapter instead (``r1omni_fast.model.lora.save_adapter``)."""
    from r1omni_fast.model import lora

    if lora.is_lora(model):
        lora.save_adapter(model, folder, d)
        return
    state = full_state_dict(model, d)
    if d.is_main:
        model.save_pretrained(folder, state_dict=state)


__all__ = [
    "CompletionLogits", "Dist", "accumulating", "ddp", "export_model", "from_environment", "fsdp",
    "full_state_dict", "gathered", "grad_norm_value", "load_full_optimizer", "load_sharded", "rank_slice",
    "save_sharded", "shutdown",
]
