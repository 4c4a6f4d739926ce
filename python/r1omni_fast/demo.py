"""The end-to-end demo: the whole R1-Omni recipe on the embedded default, on a CPU, in minutes.

``run_demo(out)`` does, in order:

1. ``OUT/tiny-model``  — the tiny HumanOmni-architecture checkpoint (``r1omni_fast.model.tiny``)
   with its vision and audio towers pretrained on the synthetic generator's faces and voices
   (``--pretrain-towers``), as HumanOmni's towers come pretrained; the LLM is untrained;
2. ``OUT/data``        — the synthetic clips (``r1omni_fast.data.synthetic``; each label is carried
   by the picture, the sound or both) in R1-Omni's data regime (``DEMO_DATA``): a small cold-start
   split with reasoning (``sft.json``), a larger label-only RL split (``train.json``) and a
   held-out split of 64 clips (``test.json``);
3. ``OUT/eval/untrained`` — evaluation of the untrained model on the held-out split;
4. ``OUT/sft``         — cold-start SFT on the reasoning targets, then ``OUT/eval/sft``;
5. ``OUT/grpo``        — GRPO from the SFT model with the accuracy + format rewards, then
   ``OUT/eval/grpo``;

then draws ``OUT/summary.png`` and returns one row per stage (format rate, WAR, UAR, where its
files are). The settings are those of ``configs/tiny-sft.yaml`` and ``configs/tiny-grpo.yaml``
(a test keeps them equal); ``sft_steps`` / ``grpo_steps`` shorten or lengthen the two stages.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from r1omni_fast.data.synthetic import DEFAULT_LABELS

#: Data of the demo (``r1omni_fast.data.synthetic.generate``), R1-Omni's regime in miniature: a
#: small cold-start split with reasoning, a larger label-only RL split, a held-out split of 64.
#: With 256 clips: 64 held out (16 per class), 4 for the cold start (one per class), 188 for GRPO.
DEMO_DATA: Dict[str, Any] = {"n": 256, "test_fraction": 0.25, "sft_fraction": 0.02, "reasoning": "short"}
#: SFT settings of the demo (the non-path fields of configs/tiny-sft.yaml).
DEMO_SFT: Dict[str, Any] = {
    "num_frames": 2, "max_steps": 100, "learning_rate": 5e-3, "lr_scheduler_type": "cosine",
    "warmup_ratio": 0.05, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
    "max_grad_norm": 1.0, "max_length": 2048,
    "tunable_parts": ["mm_language_model", "mm_mlp_adapter", "audio_projector", "bert_gate"],
}
#: GRPO settings of the demo (the non-path fields of configs/tiny-grpo.yaml).
DEMO_GRPO: Dict[str, Any] = {
    "num_frames": 2, "max_steps": 120, "learning_rate": 1e-3, "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1,
    "num_generations": 8, "max_prompt_length": 512, "max_completion_length": 16, "temperature": 1.0,
    "beta": 0.04, "epsilon": 0.2, "loss_type": "grpo", "num_iterations": 1, "scale_rewards": "group",
    "reward_funcs": ["accuracy", "format"], "reward_mode": "robust",
    "tunable_parts": ["mm_language_model", "mm_mlp_adapter", "audio_projector", "bert_gate"],
}


def answer_budget(model_dir: Union[str, Path], sft_file: Union[str, Path], labels: Sequence[str]) -> int:
    """Tokens an evaluation may generate: 1.5 x the longest SFT target (with its end token) under
    the checkpoint's tokenizer, so that a model that learned the targets' length is never cut off
    before its ``<answer>``."""
    from tokenizers import Tokenizer

    from r1omni_fast.data import read_data

    tokenizer = Tokenizer.from_file(str(Path(model_dir) / "tokenizer.json"))
    longest = max(len(tokenizer.encode(s.target + "<|im_end|>", add_special_tokens=False).ids)
                  for s in read_data(sft_file, labels=list(labels), kind="sft"))
    return (3 * longest + 1) // 2


@dataclass
class StageResult:
    """One row of the demo's table."""

    stage: str
    model: Path
    eval_dir: Path
    metrics: Dict[str, Any]


def run_demo(
    out: Union[str, Path] = "runs/demo",
    *,
    sft_steps: Optional[int] = None,
    grpo_steps: Optional[int] = None,
    clips: Optional[int] = None,
    seed: int = 0,
    labels: Sequence[str] = DEFAULT_LABELS,
    loader: Optional[Callable[..., list]] = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> List[StageResult]:
    """Run the five steps of the module docstring under ``out``; returns the three stage rows.

    ``sft_steps`` / ``grpo_steps`` default to the demo settings (100 / 120); ``clips`` to
    ``DEMO_DATA["n"]`` (256). ``loader`` replaces
    ``r1omni_fast.media.load_batch`` everywhere. ``echo`` receives one line per step.
    """
    from r1omni_fast.config import GRPOConfig, SFTConfig
    from r1omni_fast.data.synthetic import generate
    from r1omni_fast.eval.runner import evaluate
    from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint
    from r1omni_fast.train.grpo import run_grpo
    from r1omni_fast.train.sft import run_sft

    out = Path(out)
    labels = list(labels)
    echo(f"[1/5] tiny checkpoint, towers pretrained on the generator's cues -> {out / 'tiny-model'}")
    tiny = Path(build_tiny_checkpoint(out / "tiny-model", seed=seed, pretrain_towers=True))
    settings = {**DEMO_DATA, **({"n": clips} if clips else {})}
    echo(f"[2/5] {settings['n']} synthetic clips -> {out / 'data'}")
    data = generate(out / "data", seed=seed, labels=labels, **settings)
    eval_tokens = answer_budget(tiny, data.sft, labels)

    def run_eval(stage: str, model_dir: Path) -> StageResult:
        folder = out / "eval" / stage
        metrics = evaluate(model_dir, data.test, folder, label_set=labels, num_frames=DEMO_SFT["num_frames"],
                           max_new_tokens=eval_tokens, loader=loader, progress=progress,
                           desc=f"eval {stage}")
        echo(f"      {stage}: format {metrics['format_rate']:.3f}  WAR {metrics['war']:.3f}  "
             f"UAR {metrics['uar']:.3f}  -> {folder}")
        return StageResult(stage, model_dir, folder, metrics)

    def stage_settings(defaults: Dict[str, Any], steps: Optional[int], **paths: str) -> Dict[str, Any]:
        # One checkpoint, at the end: the demo evaluates the final model, not intermediate ones.
        values = {**defaults, **paths, "label_set": labels, "seed": seed, "bf16": False, "save_steps": 10**9}
        if steps:
            values["max_steps"] = steps
        return values

    rows = []
    echo("[3/5] evaluating the untrained model")
    rows.append(run_eval("untrained", tiny))

    echo("[4/5] cold-start SFT")
    sft_cfg = SFTConfig(**stage_settings(DEMO_SFT, sft_steps, model_name_or_path=str(tiny),
                                         data_file=str(data.sft), output_dir=str(out / "sft")))
    sft_dir = Path(run_sft(sft_cfg, loader=loader, progress=progress))
    rows.append(run_eval("sft", sft_dir))

    echo("[5/5] GRPO")
    grpo_cfg = GRPOConfig(**stage_settings(DEMO_GRPO, grpo_steps, model_name_or_path=str(sft_dir),
                                           data_file=str(data.train), output_dir=str(out / "grpo")))
    grpo_dir = Path(run_grpo(grpo_cfg, loader=loader, progress=progress))
    rows.append(run_eval("grpo", grpo_dir))
    plot_summary(rows, out / "summary.png")
    return rows


def plot_summary(rows: Sequence[StageResult], out_png: Union[str, Path]) -> Path:
    """``OUT/summary.png``: WAR and UAR of each stage side by side (left) and each class's recall
    after each stage (right), on the held-out split; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [r.stage for r in rows]
    labels = list(rows[0].metrics["labels"]) if rows else []
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [1, 1.6]})
    width = 0.38
    for j, (key, name) in enumerate((("war", "WAR"), ("uar", "UAR"))):
        xs = [i + (j - 0.5) * width for i in range(len(rows))]
        values = [r.metrics[key] for r in rows]
        bars = left.bar(xs, values, width, label=name, color=f"C{j}")
        left.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=8)
    left.set_xticks(range(len(rows)), stages)
    left.set_ylim(0, 1.15)
    left.set_ylabel("held-out score")
    left.set_title(f"WAR and UAR (n={rows[0].metrics['n'] if rows else 0})")
    left.legend(fontsize=8, loc="upper left")
    width = 0.8 / max(1, len(rows))
    for j, r in enumerate(rows):
        recall = [r.metrics["per_class_recall"].get(label) or 0.0 for label in labels]
        right.bar([i + (j - (len(rows) - 1) / 2) * width for i in range(len(labels))], recall, width,
                  label=r.stage, color=f"C{j + 2}")
    right.set_xticks(range(len(labels)), labels)
    right.set_ylim(0, 1.15)
    right.set_ylabel("recall")
    right.set_title("per-class recall after each stage")
    right.legend(fontsize=8, loc="upper left", ncol=len(rows))
    for ax in (left, right):
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def demo_table(rows: Sequence[StageResult], out: Optional[Union[str, Path]] = None) -> str:
    """Format rate, WAR and UAR per stage, then where each stage's model and evaluation are, and
    (given the demo's ``out``) its summary and GRPO curves."""
    lines = [f"{'stage':<10}  {'format':>6}  {'WAR':>6}  {'UAR':>6}  model / evaluation"]
    for r in rows:
        m = r.metrics
        lines.append(f"{r.stage:<10}  {m['format_rate']:6.3f}  {m['war']:6.3f}  {m['uar']:6.3f}  "
                     f"{r.model}  {r.eval_dir}")
    n = rows[0].metrics["n"] if rows else 0
    lines.append(f"(synthetic test split, n={n}; each evaluation folder holds metrics.json, "
                 "predictions.jsonl and confusion_matrix.png)")
    if out is not None:
        out = Path(out)
        lines.append(f"summary: {out / 'summary.png'} (WAR, UAR and per-class recall of each stage)")
        lines.append(f"GRPO curves: {out / 'grpo' / 'grpo_curves.png'} (reward, accuracy reward, KL, "
                     "reward std, completion length)")
    return "\n".join(lines)
