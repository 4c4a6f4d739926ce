"""The run configurations: one dataclass per stage (:class:`SFTConfig`, :class:`GRPOConfig`),
TRL's field names, each field's help and the validation of every value."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Type, Union

import yaml

from r1omni_fast import labels as label_sets
from r1omni_fast.config.values import (_FALSE, _TRUE, SHOWN_CHARS, ConfigError, _clip, _convert, _hints,
                                       _require_finite, _type_name, _unknown_message, shown)


#: Parts of the omni model that training can update; the rest is frozen.
#: HumanOmni's ``mm_tunable_parts`` names (the keys of ``r1omni_fast.model.TUNABLE_PARTS``; a test
#: keeps the two in step without this module importing the model).
MODEL_PARTS = ("mm_language_model", "mm_mlp_adapter", "audio_projector", "bert_gate",
               "mm_vision_tower", "mm_audio_tower", "bert_model")


SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine")


ASPECTS = ("pad", "resize")


#: ``report_to`` trackers (TRL's names) and the package each one needs.
TRACKER_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "trackio": "trackio", "mlflow": "mlflow"}


def _f(default: Any = dataclasses.MISSING, help: str = "", **kw: Any) -> Any:
    """A dataclass field carrying its help text (shown by ``r1omni-fast train --help``)."""
    if isinstance(default, list):
        value = list(default)
        return field(default_factory=lambda: list(value), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class _RunConfig:
    """Fields shared by every stage."""

    model_name_or_path: Optional[str] = _f(None, "checkpoint folder to start from (e.g. the tiny model from `r1omni-fast model tiny OUT`)")
    data_file: Optional[str] = _f(None, "R1-Omni JSON/JSONL training data (media paths relative to it)")
    eval_file: Optional[str] = _f(None, "held-out data evaluated every eval_steps")
    output_dir: str = _f("outputs", "run folder: checkpoints, metrics.jsonl, plots")
    label_set: Union[str, List[str]] = _f("dfew", "dfew, mafw, ravdess, or a list of labels")
    on_bad_record: str = _f("skip", "skip bad data records (each reported with file:line) or raise")
    seed: int = _f(42, "seed of every RNG (data order, dropout, sampling)")
    # media
    num_frames: int = _f(8, "frames sampled per clip")
    image_size: Optional[int] = _f(None, "frame side in pixels; None = the model's preprocessor config")
    image_aspect_ratio: str = _f("pad", "pad (grey square, HumanOmni training) or resize (squash)")
    n_mels: Optional[int] = _f(None, "log-mel bins (128 large-v3, 80); None = the model's config")
    # precision and loading
    bf16: Optional[bool] = _f(None, "bfloat16 autocast; None = on with CUDA, off on CPU")
    dataloader_num_workers: int = _f(1, "background threads decoding batches")
    dataloader_prefetch_factor: int = _f(2, "batches decoded ahead of the training step")

    stage = ""  # set by each subclass; not a field

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = _convert(f.name, getattr(self, f.name), _hints(type(self))[f.name])
            _require_finite(f.name, value)
            setattr(self, f.name, value)
        self._validate()

    # --- validation helpers -------------------------------------------------------------------
    def _validate(self) -> None:
        _choice(self, "on_bad_record", ("skip", "raise"))
        _choice(self, "image_aspect_ratio", ASPECTS)
        _at_least(self, "num_frames", 1)
        _at_least(self, "dataloader_num_workers", 1)
        _at_least(self, "dataloader_prefetch_factor", 1)
        if self.image_size is not None:
            _at_least(self, "image_size", 8)
        if self.n_mels is not None:
            _at_least(self, "n_mels", 1)
        try:
            resolved = label_sets.resolve(self.label_set)
        except ValueError as exc:
            raise ConfigError(f"label_set: {_clip(str(exc), 2 * SHOWN_CHARS)}") from None
        if resolved.open and (self.stage != "sft" or getattr(self, "eval_file", None)):
            where = "an SFT run with eval_file" if self.stage == "sft" else f"{self.stage}"
            raise ConfigError(
                f"label_set: {shown(self.label_set)} (any answer) is for SFT training data only, not {where}: "
                "rewards and evaluation need a closed set; name it (dfew, mafw, ravdess or a list of labels)")

    def require(self, *names: str) -> None:
        """Raise ConfigError for the first of ``names`` that is unset (None or empty)."""
        for name in names:
            if getattr(self, name) in (None, ""):
                raise ConfigError(
                    f"{name} is required: set '{name}:' in the YAML or pass --{name.replace('_', '-')} VALUE")

    # --- saving -------------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """``{"stage": ..., field: value, ...}`` in field order; loads back with from_dict."""
        out: Dict[str, Any] = {"stage": self.stage}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, (list, tuple)) else value
        return out

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)

    @classmethod
    def from_dict(cls, values: Dict[str, Any], *, source: str = "config") -> "_RunConfig":
        """Build from a mapping of field names (a ``stage`` key must match, if present)."""
        values = dict(values)
        stage = values.pop("stage", cls.stage)
        if stage != cls.stage:
            raise ConfigError(f"{source}: stage {shown(stage)} does not match {cls.__name__} ({cls.stage!r})")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                raise ConfigError(_unknown_message(key, names, cls.stage, source))
        return cls(**values)


@dataclass
class _TrainConfig(_RunConfig):
    """Optimisation, schedule, checkpointing and logging (TRL's names)."""

    max_steps: int = _f(-1, "optimizer steps to run; -1 = num_train_epochs over data_file")
    num_train_epochs: float = _f(1.0, "passes over data_file when max_steps is -1")
    learning_rate: float = _f(2e-5, "peak AdamW learning rate")
    lr_scheduler_type: str = _f("cosine", "constant, constant_with_warmup, linear or cosine")
    warmup_ratio: float = _f(0.03, "fraction of the steps spent warming up linearly from 0")
    weight_decay: float = _f(0.0, "AdamW decoupled weight decay")
    adam_beta1: float = _f(0.9, "AdamW beta1")
    adam_beta2: float = _f(0.999, "AdamW beta2")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon")
    per_device_train_batch_size: int = _f(1, "samples per micro-batch")
    gradient_accumulation_steps: int = _f(1, "micro-batches per optimizer step")
    max_grad_norm: float = _f(1.0, "clip the global gradient norm to this; 0 = no clipping")
    router_aux_loss_coef: float = _f(0.0, "MoE models (Qwen3-Omni): weight of the router load-balancing loss "
                                          "added to the loss; 0 = not added (aux_loss is logged either way)")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward to save memory")
    tunable_parts: List[str] = _f(["mm_language_model", "mm_mlp_adapter", "audio_projector"],
                                  "parts trained, others frozen (HumanOmni's mm_tunable_parts): "
                                  "mm_language_model, mm_mlp_adapter, audio_projector, bert_gate, "
                                  "mm_vision_tower, mm_audio_tower, bert_model")
    # LoRA through peft (TRL's ModelConfig names; r1omni_fast.model.lora)
    use_peft: bool = _f(False, "train LoRA adapters (peft) on the LLM instead of its weights; the other "
                               "tunable_parts train as full copies (peft modules_to_save)")
    lora_r: int = _f(16, "use_peft: LoRA rank")
    lora_alpha: int = _f(32, "use_peft: LoRA scaling numerator (the update is scaled by lora_alpha / lora_r)")
    lora_dropout: float = _f(0.05, "use_peft: dropout on the adapters' input")
    lora_target_modules: Optional[List[str]] = _f(None, "use_peft: modules given adapters: None = the LLM's "
                                                        "attention and MLP projections (q_proj k_proj v_proj "
                                                        "o_proj gate_proj up_proj down_proj), all-linear = "
                                                        "every linear layer of the LLM but its output head, or "
                                                        "a list of LLM module names (name endings, as peft) or "
                                                        "full dotted paths from the model root")
    lora_modules_to_save: Optional[List[str]] = _f(None, "use_peft: more modules trained in full and saved "
                                                         "with the adapter (e.g. lm_head); dotted paths or "
                                                         "name endings")
    logging_steps: int = _f(1, "write metrics.jsonl and the progress bar every N steps")
    save_steps: int = _f(500, "write OUT/checkpoint-N every N steps (and at the end)")
    save_total_limit: Optional[int] = _f(3, "keep only the newest K checkpoints; None = keep all")
    eval_steps: Optional[int] = _f(None, "evaluate eval_file every N steps; None = only at the end")
    eval_max_new_tokens: int = _f(512, "generation length when evaluating eval_file (r1omni-fast eval's default; "
                                       "eval/truncated counts the answers it cut off)")
    per_device_eval_batch_size: int = _f(8, "samples per evaluation batch")
    resume: bool = _f(False, "continue from the newest complete checkpoint in output_dir")
    overwrite_output_dir: bool = _f(False, "start afresh in an output_dir holding another run: its checkpoints "
                                           "and metrics are removed first (without it, or resume, such a folder "
                                           "is refused)")
    # faults (docs/troubleshooting.md)
    max_nonfinite_steps: int = _f(3, "optimizer steps in a row skipped for a NaN/inf loss or gradient norm "
                                     "before the run stops")
    max_skipped_batches: int = _f(20, "batches in a row with no loadable clip before the run stops")
    max_skipped_fraction: float = _f(0.25, "share of an epoch's samples whose media may fail to load before "
                                           "the run stops; 1 = no limit")
    preflight_clips: int = _f(4, "clips decoded before step 1 (the run does not start when none loads); "
                                 "0 = no check")
    # several processes (torchrun); ignored in a single process
    parallelism: str = _f("ddp", "under torchrun: ddp (replicated model, gradients all-reduced) or fsdp "
                                 "(FSDP2: every LLM decoder layer sharded)")
    fsdp_shard_towers: bool = _f(False, "fsdp: shard the frozen towers too (one unit each) instead of "
                                        "replicating them on every rank")
    ddp_timeout: int = _f(1800, "seconds a collective may wait for the other ranks before the job fails")
    ddp_find_unused_parameters: bool = _f(False, "ddp: allow trainable parameters that receive no "
                                                 "gradient in a step (slower)")
    # experiment trackers (r1omni_fast.train.tracking)
    report_to: List[str] = _f(["none"], "experiment trackers receiving every logged metric and the config: "
                                        "tensorboard, wandb, trackio, mlflow, or none")
    device: str = _f("auto", "where the run trains: auto (CUDA when present, else CPU), cpu, cuda or cuda:N; "
                             "under torchrun each rank takes cuda:LOCAL_RANK (auto or cuda) or cpu")

    def _validate(self) -> None:
        super()._validate()
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be > 0, or -1 to use num_train_epochs; got {self.max_steps}")
        if self.max_steps == -1:
            _positive(self, "num_train_epochs")
        _positive(self, "learning_rate")
        _choice(self, "lr_scheduler_type", SCHEDULERS)
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _at_least(self, "weight_decay", 0.0)
        for name in ("adam_beta1", "adam_beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        _positive(self, "adam_epsilon")
        _at_least(self, "per_device_train_batch_size", 1)
        _at_least(self, "gradient_accumulation_steps", 1)
        _at_least(self, "max_grad_norm", 0.0)
        _at_least(self, "router_aux_loss_coef", 0.0)
        bad = [p for p in self.tunable_parts if p not in MODEL_PARTS]
        if bad:
            raise ConfigError(
                f"tunable_parts has unknown part(s) {bad}: choose from {', '.join(MODEL_PARTS)}")
        if not self.tunable_parts:
            raise ConfigError(f"tunable_parts is empty: name at least one of {', '.join(MODEL_PARTS)}")
        _validate_lora(self)
        _at_least(self, "logging_steps", 1)
        _at_least(self, "save_steps", 1)
        if self.save_total_limit is not None:
            _at_least(self, "save_total_limit", 1)
        if self.eval_steps is not None:
            _at_least(self, "eval_steps", 1)
        _at_least(self, "eval_max_new_tokens", 1)
        _at_least(self, "per_device_eval_batch_size", 1)
        _choice(self, "parallelism", ("ddp", "fsdp"))
        _at_least(self, "ddp_timeout", 1)
        _at_least(self, "max_nonfinite_steps", 1)
        _at_least(self, "max_skipped_batches", 1)
        if not 0.0 < self.max_skipped_fraction <= 1.0:
            raise ConfigError(f"max_skipped_fraction must be in (0, 1], got {self.max_skipped_fraction}")
        _at_least(self, "preflight_clips", 0)
        bad = [n for n in self.report_to if n not in TRACKER_PACKAGES and n != "none"]
        if bad:
            raise ConfigError(f"report_to has unknown tracker(s) {bad}: choose from "
                              f"{', '.join(TRACKER_PACKAGES)} or none")
        if "none" in self.report_to and len(set(self.report_to)) > 1:
            raise ConfigError(f"report_to {self.report_to} names trackers and none: drop none, or the trackers")
        missing = missing_tracker_packages(self.report_to)
        if missing:
            raise ConfigError(missing[0])
        if parse_device(self.device) is None:
            raise ConfigError(f"device must be auto, cpu, cuda or cuda:N; got {shown(self.device)}")


@dataclass
class SFTConfig(_TrainConfig):
    """Cold-start SFT (R1-Omni's defaults: lr 2e-5, cosine, warmup 0.03, 8 frames, frozen towers).

    The loss covers the assistant tokens only.
    """

    max_length: int = _f(1024, "truncate prompt + target to this many tokens")
    prompt_style: str = _f("data", "the user turn: data (the human turn, placeholders wrapped where they "
                                   "are) or humanomni (HumanOmni's SFT layout: placeholders moved to the "
                                   "front, three newlines, its BERT text with tags left in)")

    stage = "sft"

    def _validate(self) -> None:
        super()._validate()
        _at_least(self, "max_length", 16)
        _choice(self, "prompt_style", ("data", "humanomni"))


#: TRL's GRPO loss types (r1omni_fast.kernels.grpo_loss).
GRPO_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")


#: What ``generation_kwargs`` may hold: the sampler's settings (they override the fields).
GENERATION_KWARGS = ("temperature", "top_p", "top_k", "min_p", "repetition_penalty")


_GENERATION_KWARGS_ELSEWHERE = {
    "max_new_tokens": "set max_completion_length", "max_tokens": "set max_completion_length",
    "do_sample": "GRPO always samples", "num_return_sequences": "set num_generations", "n": "set num_generations",
    "seed": "set seed", "num_beams": "GRPO samples, it does not search"}


_NO_VLLM = ("generation runs in the training process with a prefix-shared, preallocated KV cache "
            "(no vLLM server or engine): remove it")


#: TRL GRPOConfig fields with no meaning here: (the value that turns them off in TRL, what to do instead).
TRL_ONLY_FIELDS: Dict[str, tuple] = {
    "use_vllm": (False, _NO_VLLM),
    "use_transformers_paged": (False, _NO_VLLM),
    "use_transformers_continuous_batching": (False, _NO_VLLM),
    "cache_implementation": (None, "generation keeps its own static KV cache: remove it"),
    "use_liger_kernel": (False, "the fused GRPO loss always runs (Triton on CUDA): remove it"),
    "use_liger_loss": (False, "the fused GRPO loss always runs (Triton on CUDA): remove it"),
    "entropy_coef": (0.0, "there is no entropy bonus: remove it"),
    "use_adaptive_entropy": (False, "there is no entropy bonus: remove it"),
    "num_generations_eval": (None, "evaluation decodes one answer per clip (eval_max_new_tokens): remove it"),
    "model_init_kwargs": (None, "the model loads from model_name_or_path, in bf16 when bf16 is on: remove it"),
    "log_completions_hub_repo": (None, "completions go to OUT/completions.jsonl and the report_to trackers: "
                                       "remove it"),
}


@dataclass
class GRPOConfig(_TrainConfig):
    """GRPO with verifiable rewards (DESIGN.md §4).

    ``per_device_train_batch_size`` counts prompts, each sampled ``num_generations`` times.
    """

    learning_rate: float = _f(1e-6, "peak AdamW learning rate")
    warmup_ratio: float = _f(0.0, "fraction of the steps spent warming up linearly from 0")
    num_generations: int = _f(8, "completions sampled per prompt (the group size G)")
    max_prompt_length: Optional[int] = _f(512, "truncate prompts (left) to this many tokens; None = no limit")
    max_completion_length: int = _f(512, "most tokens generated per completion")
    temperature: float = _f(1.0, "sampling temperature")
    top_p: float = _f(1.0, "nucleus sampling mass")
    top_k: Optional[int] = _f(None, "sample among the k most likely tokens; None = all")
    beta: float = _f(0.04, "KL coefficient against the reference model; 0 = no reference model")
    epsilon: float = _f(0.2, "lower clip range of the importance ratio")
    epsilon_high: Optional[float] = _f(None, "upper clip range; None = epsilon")
    delta: Optional[float] = _f(None, "two-sided clipping bound of the ratio; None = off")
    loss_type: str = _f("grpo", "grpo (R1-Omni), bnpo, dr_grpo, dapo, cispo, sapo, luspo or vespo (TRL's "
                                "formulas and normalisers)")
    sapo_temperature_pos: float = _f(1.0, "sapo: slope of the soft gate for tokens with advantage > 0")
    sapo_temperature_neg: float = _f(1.05, "sapo: slope of the soft gate for tokens with advantage <= 0")
    vespo_k_pos: float = _f(2.0, "vespo: exponent of the Gamma weight for advantage >= 0")
    vespo_lambda_pos: float = _f(3.0, "vespo: decay of the Gamma weight for advantage >= 0")
    vespo_k_neg: float = _f(3.0, "vespo: exponent of the Gamma weight for advantage < 0")
    vespo_lambda_neg: float = _f(2.0, "vespo: decay of the Gamma weight for advantage < 0")
    off_policy_mask_threshold: Optional[float] = _f(None, "drop from the policy term the sequences with advantage "
                                                          "< 0 whose mean log-ratio old - current exceeds this "
                                                          "(DeepSeek-V3.2's off-policy sequence mask, TRL's); "
                                                          "None = off")
    use_bias_correction_kl: bool = _f(False, "multiply the k3 KL by the importance ratio (DeepSeek-V3.2's "
                                             "unbiased estimator off-policy, TRL's)")
    top_entropy_quantile: float = _f(1.0, "train the policy term only on the tokens whose entropy is in this top "
                                          "fraction of the micro-batch's completion tokens (over all ranks); "
                                          "1.0 = every token, 0.2 = the paper's")
    importance_sampling_level: str = _f("token", "token or sequence (GSPO) importance ratios")
    num_iterations: int = _f(1, "updates per generated batch (old log-probs kept when > 1)")
    steps_per_generation: Optional[int] = _f(None, "micro-batches generated at once and then trained on one "
                                                   "after the other (TRL's); None = gradient_accumulation_steps "
                                                   "(or from generation_batch_size)")
    generation_batch_size: Optional[int] = _f(None, "completions generated at once over every rank (TRL's): "
                                                    "steps_per_generation x per_device_train_batch_size x "
                                                    "num_generations x ranks; None = from steps_per_generation")
    scale_rewards: str = _f("group", "divide advantages by the std of the group, the batch, or none")
    reward_funcs: List[str] = _f(["accuracy", "format"],
                                 "built-in rewards (accuracy, format) or dotted paths to callables")
    reward_weights: Optional[List[float]] = _f(None, "one weight per reward function; None = all 1")
    multi_objective_aggregation: str = _f("sum_then_normalize", "sum_then_normalize (weighted sum, then "
                                                               "scale_rewards) or normalize_then_sum (each "
                                                               "function normalised in its group, summed, then "
                                                               "normalised over the generation batch; TRL's GDPO)")
    reward_mode: str = _f("robust", "robust (label aliases, whitespace) or r1omni (exact R1-Omni parsing)")
    reward_completions: str = _f("messages", "what reward callables receive as prompts and completions: "
                                             "messages (chat messages, as TRL passes conversational data) or text")
    reward_bound: float = _f(1e6, "a reward function's value beyond +-reward_bound (or +-inf) is invalid; "
                                  "NaN / None means 'not scored'")
    on_invalid_reward: str = _f("raise", "raise (an error naming the function and the sample) or skip (count "
                                         "it in rewards/num_invalid and treat it as not scored)")
    sync_ref_model: bool = _f(False, "periodically copy the policy into the reference model")
    ref_model_sync_steps: int = _f(512, "steps between reference syncs (when sync_ref_model)")
    ref_model_mixup_alpha: float = _f(0.6, "ref <- alpha*policy + (1-alpha)*ref at each sync")
    per_prompt_sampling: Optional[bool] = _f(None, "draw each prompt's completions from its own generator, "
                                                   "seeded by (seed, the prompt's place in the data stream), "
                                                   "so that runs agree at any number of ranks; None = on "
                                                   "under torchrun or when resuming a run that used it, "
                                                   "off in one process")
    # TRL's fields for logging, sampling, data order and masking (r1omni_fast.train.grpo)
    log_completions: bool = _f(False, "every logging_steps, send the step's completions as a table to the "
                                      "report_to trackers and print num_completions_to_print of them")
    num_completions_to_print: Optional[int] = _f(None, "completions printed when log_completions; None = all")
    min_p: Optional[float] = _f(None, "sample only tokens whose probability is at least min_p times the most "
                                      "likely token's (after temperature, top_k, top_p); None = off")
    repetition_penalty: float = _f(1.0, "divide the positive logits (multiply the negative ones) of tokens "
                                        "already in the prompt or the completion by this; 1 = off")
    generation_kwargs: Optional[Dict[str, Any]] = _f(None, "sampling settings overriding the fields of the same "
                                                           "name: " + ", ".join(GENERATION_KWARGS))
    modality_dropout: Optional[Dict[str, float]] = _f(None, "GRPO modality dropout: probability per modality "
                                                            "({video: p, audio: p}) that a prompt is given without "
                                                            "it, one draw per prompt for its G completions "
                                                            "(r1omni_fast.train.modality_dropout); None = off")
    mask_truncated_completions: bool = _f(False, "leave completions that hit max_completion_length without an "
                                                 "EOS out of the loss (their tokens count in no normaliser)")
    shuffle_dataset: bool = _f(True, "draw the prompts in a new random order every epoch; false = file order")
    disable_dropout: bool = _f(False, "set every dropout probability of the policy and the reference to 0")
    lr_scheduler_type: str = _f("linear", "constant, constant_with_warmup, linear (TRL's default, "
                                          "R1-Omni's) or cosine")
    # R1-Omni's published GRPO recipe, selectable (docs/reproducing.md)
    prompt_style: str = _f("data", "the user turn: data (the record's human turn verbatim) or r1omni "
                                   "(R1-Omni's GRPO: the record's media placeholders, `question`, a "
                                   "newline and the <think>/<answer> format instruction)")
    question: Optional[str] = _f(None, "the fixed question of prompt_style r1omni; None = R1-Omni's")
    solution_style: str = _f("label", "the accuracy reward's solution: label (\"<answer> {canonical "
                                      "label} </answer>\") or raw (\"<answer> {gpt value verbatim} "
                                      "</answer>\", as R1-Omni)")
    chat_template: str = _f("checkpoint", "the prompt rendering: checkpoint (the tokenizer's own chat "
                                          "template) or qwen2vl (Qwen2-VL's template, as R1-Omni's GRPO)")

    stage = "grpo"

    def __post_init__(self) -> None:
        flag = self.scale_rewards  # TRL's older boolean form: true = group, false = none
        if isinstance(flag, str) and flag.strip().lower() in _TRUE | _FALSE:
            flag = flag.strip().lower() in _TRUE
        if isinstance(flag, bool):
            self.scale_rewards = "group" if flag else "none"
        super().__post_init__()

    def _validate(self) -> None:
        super()._validate()
        _at_least(self, "num_generations", 2)
        if self.max_prompt_length is not None:
            _at_least(self, "max_prompt_length", 1)
        _at_least(self, "max_completion_length", 1)
        _positive(self, "temperature")
        if not 0.0 < self.top_p <= 1.0:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k is not None:
            _at_least(self, "top_k", 0)
        _at_least(self, "beta", 0.0)
        _positive(self, "epsilon")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ConfigError(
                f"epsilon_high must be >= epsilon ({self.epsilon}), got {self.epsilon_high}")
        _choice(self, "loss_type", GRPO_LOSS_TYPES)
        _choice(self, "importance_sampling_level", ("token", "sequence"))
        clipped = self.loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "luspo")
        if self.delta is not None and not clipped:
            raise ConfigError(f"delta caps the clipped surrogate, which loss_type {self.loss_type} does not use: "
                              "set delta: null")
        if self.delta is not None and self.delta <= 1.0 + (self.epsilon_high or self.epsilon):
            raise ConfigError(
                f"delta must exceed 1 + epsilon_high (the upper clip), got {self.delta}; "
                "set delta: null to turn two-sided clipping off")
        for name in ("sapo_temperature_pos", "sapo_temperature_neg"):
            _positive(self, name)
        for name in ("vespo_lambda_pos", "vespo_lambda_neg"):
            _at_least(self, name, 0.0)
        if not 0.0 <= self.top_entropy_quantile <= 1.0:
            raise ConfigError(f"top_entropy_quantile must be in [0, 1] (1 = every token), got "
                              f"{self.top_entropy_quantile}")
        if self.loss_type == "luspo":
            # TRL's luspo: mean over every (row, position) of the padded micro-batch of loss * length;
            # only at sequence level without KL or entropy mask is no padding position in it
            if self.importance_sampling_level != "sequence":
                raise ConfigError("loss_type luspo needs importance_sampling_level: sequence (at token level "
                                  "TRL's luspo averages over the padding positions too)")
            if self.beta != 0.0:
                raise ConfigError(f"loss_type luspo needs beta: 0, got {self.beta} (TRL's luspo averages its "
                                  "KL term over the padding positions too)")
            if self.top_entropy_quantile < 1.0:
                raise ConfigError("loss_type luspo needs top_entropy_quantile: 1.0 (TRL's luspo averages the "
                                  "entropy mask over the padding positions too)")
            if self.off_policy_mask_threshold is not None:
                raise ConfigError("loss_type luspo takes no off_policy_mask_threshold here: set it to null")
        _at_least(self, "num_iterations", 1)
        if self.steps_per_generation is not None and self.generation_batch_size is not None:
            raise ConfigError("steps_per_generation and generation_batch_size cannot both be set (TRL): set one")
        if self.steps_per_generation is not None:
            _at_least(self, "steps_per_generation", 1)
        if self.generation_batch_size is not None:
            _at_least(self, "generation_batch_size", 1)
        _choice(self, "scale_rewards", ("group", "batch", "none"))
        _choice(self, "multi_objective_aggregation", ("sum_then_normalize", "normalize_then_sum"))
        if self.modality_dropout is not None:
            if not isinstance(self.modality_dropout, dict) or not self.modality_dropout:
                raise ConfigError(f"modality_dropout must map modalities to probabilities, e.g. {{audio: 0.3}}, "
                                  f"got {self.modality_dropout!r}")
            for key, value in self.modality_dropout.items():
                if key not in ("video", "audio"):
                    raise ConfigError(f"modality_dropout: {key!r} is not a modality: use video and/or audio")
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                    raise ConfigError(f"modality_dropout: {key} must be a probability in [0, 1], got {value!r}")
        if not self.reward_funcs:
            raise ConfigError("reward_funcs is empty: use e.g. [accuracy, format]")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ConfigError(
                f"reward_weights has {len(self.reward_weights)} values for "
                f"{len(self.reward_funcs)} reward_funcs: give one weight per function")
        _choice(self, "reward_mode", ("robust", "r1omni"))
        _positive(self, "reward_bound")
        _choice(self, "on_invalid_reward", ("raise", "skip"))
        _choice(self, "reward_completions", ("messages", "text"))
        _at_least(self, "ref_model_sync_steps", 1)
        if not 0.0 <= self.ref_model_mixup_alpha <= 1.0:
            raise ConfigError(
                f"ref_model_mixup_alpha must be in [0, 1], got {self.ref_model_mixup_alpha}")
        if self.num_completions_to_print is not None:
            _at_least(self, "num_completions_to_print", 0)
        if self.min_p is not None and not 0.0 <= self.min_p <= 1.0:
            raise ConfigError(f"min_p must be in [0, 1] (or null), got {self.min_p}")
        _positive(self, "repetition_penalty")
        for key, value in (self.generation_kwargs or {}).items():
            if key not in GENERATION_KWARGS:
                hint = _GENERATION_KWARGS_ELSEWHERE.get(key, "it has no meaning for this sampler")
                raise ConfigError(f"generation_kwargs: {key!r} is not supported ({hint}); "
                                  f"supported: {', '.join(GENERATION_KWARGS)}")
            try:
                GRPOConfig._check_sampling(key, value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"generation_kwargs: {key}: {exc}") from None
        _choice(self, "prompt_style", ("data", "r1omni"))
        _choice(self, "solution_style", ("label", "raw"))
        _choice(self, "chat_template", ("checkpoint", "qwen2vl"))
        if self.use_peft and self.sync_ref_model and self.beta != 0.0:
            raise ConfigError("sync_ref_model with use_peft: the reference is the policy with its adapters disabled "
                              "(the base weights, no second copy), which cannot be synced: set sync_ref_model: false "
                              "or use_peft: false")
        if self.question is not None and self.prompt_style != "r1omni":
            raise ConfigError("question is the fixed question of prompt_style r1omni; with prompt_style "
                              f"{self.prompt_style!r} the data's human turn is the prompt: set prompt_style: "
                              "r1omni or drop question")

    @staticmethod
    def _check_sampling(key: str, value: Any) -> None:
        if key == "top_k":
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(f"must be an integer >= 0 or null, got {shown(value)}")
            return
        if key == "min_p" and value is None:
            return
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, got {shown(value)}")
        if not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        low_open = key in ("temperature", "top_p", "repetition_penalty")
        if (low_open and not value > 0) or (key in ("top_p", "min_p") and not 0 <= value <= 1):
            raise ValueError(f"out of range: {shown(value)}")

    @classmethod
    def from_dict(cls, values: Dict[str, Any], *, source: str = "config") -> "_RunConfig":
        """As :meth:`_RunConfig.from_dict`, after TRL's GRPO fields that have no meaning here: each is
        dropped when it holds the value that turns it off in TRL (``use_vllm: false``, any
        ``vllm_*`` beside ``use_vllm: false``, ``top_entropy_quantile: 1.0``, ...), and is otherwise a
        :class:`ConfigError` naming it and what to use instead."""
        values = dict(values)
        vllm_off = values.get("use_vllm") in (False, "false", "False")
        for key in list(values):
            if key.startswith("vllm_") and key not in TRL_ONLY_FIELDS:
                if vllm_off:
                    del values[key]
                    continue
                raise ConfigError(f"{source}: {key} has no meaning here: {_NO_VLLM}")
            if key in TRL_ONLY_FIELDS:
                off, hint = TRL_ONLY_FIELDS[key]
                if values[key] == off or (isinstance(values[key], str) and values[key].strip().lower() == str(off).lower()):
                    del values[key]
                    continue
                raise ConfigError(f"{source}: {key}: {shown(values[key])} has no meaning here: {hint}")
        return super().from_dict(values, source=source)


STAGES: Dict[str, Type[_RunConfig]] = {"sft": SFTConfig, "grpo": GRPOConfig}


AnyConfig = Union[SFTConfig, GRPOConfig]


def field_help(stage: str) -> List[tuple]:
    """(flag, type, default, help) for every field of a stage, for ``--help`` listings."""
    cls = STAGES[stage]
    hints = _hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        rows.append((f"--{f.name.replace('_', '-')}", _type_name(hints[f.name]), default,
                     f.metadata.get("help", "")))
    return rows


def missing_tracker_packages(names: Sequence[str]) -> List[str]:
    """One message per tracker of ``names`` whose package cannot be imported, naming what to install."""
    import importlib.util

    out = []
    for name in names:
        package = TRACKER_PACKAGES.get(name)
        if package is not None and importlib.util.find_spec(package) is None:
            out.append(f"report_to: {name} needs the {package} package, which is not installed: "
                       f"pip install {package} (or every tracker: pip install 'r1omni-fast[tracking]')")
    return out


def parse_device(text: str) -> Optional[tuple]:
    """``("auto"|"cpu"|"cuda", index or None)`` of a device setting (auto, cpu, cuda, cuda:N), or
    None when it is none of these."""
    kind, _, index = text.strip().lower().partition(":")
    if kind in ("auto", "cpu") and not index:
        return kind, None
    if kind == "cuda" and (not index or index.isdigit()):
        return kind, int(index) if index else None
    return None


def _validate_lora(cfg: Any) -> None:
    """The LoRA fields (checked whether or not ``use_peft`` is on, as they are saved with the run)."""
    _at_least(cfg, "lora_r", 1)
    _at_least(cfg, "lora_alpha", 1)
    if not 0.0 <= cfg.lora_dropout < 1.0:
        raise ConfigError(f"lora_dropout must be in [0, 1), got {cfg.lora_dropout}")
    targets = cfg.lora_target_modules
    if targets is not None:
        if not targets or any(not t.strip() for t in targets):
            raise ConfigError("lora_target_modules is empty (or holds an empty name): leave it unset for the "
                              "LLM's attention and MLP projections, or name modules (or all-linear)")
        if "all-linear" in targets and len(targets) > 1:
            raise ConfigError(f"lora_target_modules {targets} mixes all-linear with module names: give one or "
                              "the other")
    saved = cfg.lora_modules_to_save
    if saved is not None and any(not t.strip() for t in saved):
        raise ConfigError("lora_modules_to_save holds an empty name: name modules (e.g. lm_head) or leave it unset")


def _choice(cfg: Any, name: str, choices: Sequence[str]) -> None:
    value = getattr(cfg, name)
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(choices)}; got {shown(value)}")


def _at_least(cfg: Any, name: str, low: float) -> None:
    value = getattr(cfg, name)
    if value < low:
        raise ConfigError(f"{name} must be >= {low}, got {value}")


def _positive(cfg: Any, name: str) -> None:
    value = getattr(cfg, name)
    if not value > 0:
        raise ConfigError(f"{name} must be > 0, got {value}")
