"""The end-to-end demo: the whole R1-Omni recipe on the embedded default, on a CPU, in minutes.

``run_demo(out)`` does, in order:

1. ``OUT/tiny-model``  — the tiny HumanOmni-architecture checkpoint (``r1omni_fast.model.tiny``)
   with its vision and audio towers pretrained on the synthetic generator's faces and voices
   (``--pretrain-towers``), as HumanOmni's towers come pretrained; the LLM is untrained;
2. ``OUT/data``        — the synthetic clips (``r1omni_fast.data.synthetic``; each label is carried
   by the picture, the sound or both) in R1-Omni's data regime (``DEMO_DATA``): a small cold-start
   split with reasoning that shows every cue (``sft.json``), a larger label-only RL split
   (``train.json``) and a held-out split of 64 clips (``test.json``);
3. ``OUT/eval/untrained`` — evaluation of the untrained model on the held-out split;
4. ``OUT/sft``         — cold-start SFT on the reasoning targets, then ``OUT/eval/sft``;
5. ``OUT/grpo``        — GRPO from the SFT model with the accuracy + format rewards, then
   ``OUT/eval/grpo``;
6. ``OUT/grpo-grounded`` — (only with ``grounding``, ``r1omni-fast demo --grounding``: it makes
   the demo about 1.5 times as long) GRPO from the same SFT model with the
   ``cue_grounding`` reward added (``DEMO_GRPO_GROUNDED``), then ``OUT/eval/grpo-grounded``;

then draws ``OUT/summary.png`` and returns one row per stage (format rate, WAR, UAR, the
faithfulness of the reasoning, where its files are). Each trained stage's evaluation also
answers every clip with the video and with the audio removed (``OUT/eval/<stage>/video`` and
``/audio``, greedy, as ``r1omni-fast eval --ablate``) for the counterfactual attribution
(``r1omni_fast.eval.faithfulness``) in ``OUT/eval/<stage>/attribution.json``. The settings are
those of ``configs/tiny-sft.yaml`` and ``configs/tiny-grpo.yaml`` (a test keeps them equal);
``sft_steps`` / ``grpo_steps`` shorten or lengthen the stages.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from r1omni_fast.data.synthetic import DEFAULT_LABELS

#: Data of the demo (``r1omni_fast.data.synthetic.generate``), R1-Omni's regime in miniature: a
#: small cold-start split with reasoning, a larger label-only RL split, a held-out split of 64.
#: With 256 clips: 64 held out (16 per class), 4 for the cold start (one per class; their cues
#: face, voice, both, face), 188 for GRPO.
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
#: The demo's third GRPO run: the same settings with the ``cue_grounding`` reward added (1 when the
#: reasoning claims exactly the modalities the record's ``cue`` names; ``r1omni_fast.rewards``).
DEMO_GRPO_GROUNDED: Dict[str, Any] = {**DEMO_GRPO, "reward_funcs": ["accuracy", "format", "cue_grounding"]}


#: What :func:`run_demo` writes under its folder; a folder holding any of them is refused.
DEMO_OUTPUTS = ("tiny-model", "data", "eval", "sft", "grpo", "grpo-grounded", "summary.png")


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
    """One row of the demo's table. ``attribution``: the counterfactual attribution of the stage's
    model (``r1omni_fast.eval.faithfulness.counterfactual_attribution``), None where not measured."""

    stage: str
    model: Path
    eval_dir: Path
    metrics: Dict[str, Any]
    attribution: Optional[Dict[str, Any]] = None

    @property
    def cue_agreement(self) -> Optional[float]:
        """The evaluation's cue agreement (None without faithfulness metrics or cue fields)."""
        cue = self.metrics.get("faithfulness", {}).get("cue_agreement", "n/a")
        return None if cue == "n/a" else cue["agreement"]


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
    grounding: bool = False,
) -> List[StageResult]:
    """Run the steps of the module docstring under ``out``; returns the stage rows (untrained,
    sft, grpo and, with ``grounding``, grpo-grounded).

    ``sft_steps`` / ``grpo_steps`` default to the demo settings (100 / 120, both GRPO runs);
    ``clips`` to ``DEMO_DATA["n"]`` (256). ``loader`` replaces ``r1omni_fast.media.load_batch``
    everywhere. ``echo`` receives one line per step.

    Raises ``r1omni_fast.config.ConfigError`` before writing anything when ``out`` already holds
    any of a demo's files (``DEMO_OUTPUTS``): each run builds its checkpoint and data anew, so it
    never writes over an earlier one.
    """
    from r1omni_fast.data.synthetic import generate
    from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint

    out = Path(out)
    earlier = [name for name in DEMO_OUTPUTS if (out / name).exists()]
    if earlier:
        from r1omni_fast.config import ConfigError

        raise ConfigError(f"the demo's folder {out} already holds a demo run ({', '.join(earlier)}): choose "
                          f"another folder (r1omni-fast demo --out DIR) or delete this one; nothing was written")
    labels = list(labels)
    total = 6 if grounding else 5
    echo(f"[1/{total}] tiny checkpoint, towers pretrained on the generator's cues -> {out / 'tiny-model'}")
    tiny = Path(build_tiny_checkpoint(out / "tiny-model", seed=seed, pretrain_towers=True))
    settings = {**DEMO_DATA, **({"n": clips} if clips else {})}
    echo(f"[2/{total}] {settings['n']} synthetic clips -> {out / 'data'}")
    data = generate(out / "data", seed=seed, labels=labels, **settings)
    stages = DemoStages(out, data, labels, seed, answer_budget(tiny, data.sft, labels), loader, progress, echo)

    rows = []
    echo(f"[3/{total}] evaluating the untrained model")
    rows.append(stages.evaluate("untrained", tiny, attribution=False))
    echo(f"[4/{total}] cold-start SFT")
    sft_dir = stages.sft(tiny, sft_steps)
    rows.append(stages.evaluate("sft", sft_dir))
    echo(f"[5/{total}] GRPO (accuracy + format rewards)")
    rows.append(stages.evaluate("grpo", stages.grpo(sft_dir, "grpo", DEMO_GRPO, grpo_steps)))
    if grounding:
        echo(f"[6/{total}] GRPO with the cue_grounding reward added")
        rows.append(stages.evaluate("grpo-grounded",
                                    stages.grpo(sft_dir, "grpo-grounded", DEMO_GRPO_GROUNDED, grpo_steps)))
    plot_summary(rows, out / "summary.png")
    return rows


@dataclass
class DemoStages:
    """The demo's stages on one data set: SFT, GRPO and the evaluations, with the demo's settings.
    Shared by :func:`run_demo` and the ablation studies (``r1omni_fast.study``)."""

    out: Path
    data: Any  # r1omni_fast.data.synthetic.SynthDataset
    labels: List[str]
    seed: int
    eval_tokens: int
    loader: Optional[Callable[..., list]] = None
    progress: bool = True
    echo: Callable[[str], None] = print

    def settings(self, defaults: Dict[str, Any], steps: Optional[int], **paths: Any) -> Dict[str, Any]:
        # One checkpoint, at the end: the demo evaluates the final model, not intermediate ones.
        values = {**defaults, **paths, "label_set": self.labels, "seed": self.seed, "bf16": False,
                  "save_steps": 10**9}
        if steps:
            values["max_steps"] = steps
        return values

    def sft(self, model_dir: Path, steps: Optional[int] = None, data_file: Optional[Path] = None,
            name: str = "sft") -> Path:
        """Cold-start SFT of ``model_dir`` on ``data_file`` (default: the data's sft.json) into
        ``out/name``; returns the final model's folder."""
        from r1omni_fast.config import SFTConfig
        from r1omni_fast.train.sft import run_sft

        cfg = SFTConfig(**self.settings(DEMO_SFT, steps, model_name_or_path=str(model_dir),
                                        data_file=str(data_file or self.data.sft), output_dir=str(self.out / name)))
        return Path(run_sft(cfg, loader=self.loader, progress=self.progress))

    def grpo(self, model_dir: Path, name: str, defaults: Dict[str, Any], steps: Optional[int] = None,
             **overrides: Any) -> Path:
        """GRPO of ``model_dir`` on the data's train.json with ``defaults`` (and ``overrides``) into
        ``out/name``; returns the final model's folder."""
        from r1omni_fast.config import GRPOConfig
        from r1omni_fast.train.grpo import run_grpo

        cfg = GRPOConfig(**{**self.settings(defaults, steps, model_name_or_path=str(model_dir),
                                            data_file=str(self.data.train), output_dir=str(self.out / name)),
                            **overrides})
        return Path(run_grpo(cfg, loader=self.loader, progress=self.progress))

    def evaluate(self, stage: str, model_dir: Path, attribution: bool = True) -> StageResult:
        """Greedy evaluation of ``model_dir`` on the held-out split into ``out/eval/stage`` (with the
        faithfulness metrics) and, with ``attribution``, the counterfactual attribution from the
        video-removed and audio-removed passes (``out/eval/stage/{audio,video}``, the modalities
        left), written to ``out/eval/stage/attribution.json``."""
        from r1omni_fast.eval.faithfulness import counterfactual_attribution
        from r1omni_fast.eval.runner import evaluate, evaluate_rows, load_model, write_artifacts

        folder = self.out / "eval" / stage
        model = load_model(model_dir)
        options = dict(label_set=self.labels, num_frames=DEMO_SFT["num_frames"], max_new_tokens=self.eval_tokens,
                       loader=self.loader, progress=self.progress)
        metrics = evaluate(model, self.data.test, folder, desc=f"eval {stage}", **options)
        result = StageResult(stage, model_dir, folder, metrics)
        if attribution:
            full = [json.loads(line) for line in (folder / "predictions.jsonl").read_text(encoding="utf-8").splitlines()]
            left = {}
            for kept in ("audio", "video"):  # the pass without video keeps the audio, and the other way round
                r = evaluate_rows(model, self.data.test, modalities=(kept,), desc=f"eval {stage} {kept} only",
                                  **options)
                write_artifacts(folder / kept, r.metrics, r.rows)
                left[kept] = r.rows
            result.attribution = counterfactual_attribution(full, {"video": left["audio"], "audio": left["video"]})
            from r1omni_fast.atomic import write_text

            write_text(folder / "attribution.json", json.dumps(result.attribution, indent=2) + "\n")
        cue = result.cue_agreement
        line = f"      {stage}: format {metrics['format_rate']:.3f}  WAR {metrics['war']:.3f}  UAR {metrics['uar']:.3f}"
        if cue is not None:
            line += f"  cue agreement {cue:.3f}"
        if result.attribution is not None:
            line += f"  cited change {_rate(result.attribution['cited_change_rate']).strip()}"
        self.echo(f"{line}  -> {folder}")
        return result


def _rate(x: Optional[float]) -> str:
    return "   n/a" if x is None else f"{x:6.3f}"


def plot_summary(rows: Sequence[StageResult], out_png: Union[str, Path]) -> Path:
    """``OUT/summary.png``: WAR, UAR and cue agreement of each stage side by side (left) and each
    class's recall after each stage (right), on the held-out split; returns the PNG path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = [r.stage for r in rows]
    labels = list(rows[0].metrics["labels"]) if rows else []
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 3.8), gridspec_kw={"width_ratios": [1.3, 1.6]})
    width = 0.27
    scores = {"WAR": [r.metrics["war"] for r in rows], "UAR": [r.metrics["uar"] for r in rows],
              "cue agreement": [r.cue_agreement or 0.0 for r in rows]}
    for j, (name, values) in enumerate(scores.items()):
        xs = [i + (j - 1) * width for i in range(len(rows))]
        bars = left.bar(xs, values, width, label=name, color=f"C{j}" if j < 2 else "C9")
        left.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7)
    left.set_xticks(range(len(rows)), stages, fontsize=8)
    left.set_ylim(0, 1.15)
    left.set_ylabel("held-out score")
    left.set_title(f"WAR, UAR, cue agreement (n={rows[0].metrics['n'] if rows else 0})")
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
    return save_figure(fig, out_png)


def save_figure(fig: Any, out_png: Union[str, Path]) -> Path:
    """Lay out ``fig`` tightly, write it to ``out_png`` at 100 dpi and close it; returns the path."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    out = Path(out_png)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def demo_table(rows: Sequence[StageResult], out: Optional[Union[str, Path]] = None) -> str:
    """Format rate, WAR, UAR and the faithfulness of the reasoning per stage (cue agreement; the
    counterfactual attribution's cited and uncited change rates), then where each stage's model and
    evaluation are, and (given the demo's ``out``) its summary and GRPO curves."""
    lines = [f"{'stage':<13}  {'format':>6}  {'WAR':>6}  {'UAR':>6}  {'cue':>6}  {'cited':>6}  {'uncit.':>6}  "
             "model / evaluation"]
    for r in rows:
        m, a = r.metrics, r.attribution or {}
        cue = r.cue_agreement
        lines.append(f"{r.stage:<13}  {m['format_rate']:6.3f}  {m['war']:6.3f}  {m['uar']:6.3f}  "
                     f"{_rate(cue)}  {_rate(a.get('cited_change_rate'))}  {_rate(a.get('uncited_change_rate'))}  "
                     f"{r.model}  {r.eval_dir}")
    n = rows[0].metrics["n"] if rows else 0
    lines.append(f"(synthetic test split, n={n}; each evaluation folder holds metrics.json, "
                 "predictions.jsonl, confusion_matrix.png and report.html)")
    lines.append("cue: share of clips whose reasoning claims exactly the modalities that carry the label; cited / "
                 "uncit.: how often removing a modality the reasoning cites / does not cite changes the answer "
                 "(r1omni_fast.eval.faithfulness; attribution.json)")
    if out is not None:
        out = Path(out)
        lines.append(f"summary: {out / 'summary.png'} (WAR, UAR, cue agreement and per-class recall of each stage)")
        lines.append(f"GRPO curves: {out / 'grpo' / 'grpo_curves.png'} (reward, accuracy reward, KL, "
                     "reward std, completion length)")
    return "\n".join(lines)
