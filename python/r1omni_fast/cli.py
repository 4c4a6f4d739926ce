"""The ``r1omni-fast`` command line."""

from __future__ import annotations

import click

import r1omni_fast


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(r1omni_fast.__version__, "--version", "-V", prog_name="r1omni-fast")
def main() -> None:
    """Train and evaluate omni-modal emotion-recognition models with SFT and GRPO (R1-Omni)."""


@main.command()
def env() -> None:
    """Print versions, devices and native build information (paste this into bug reports)."""
    from r1omni_fast.envinfo import collect

    info = collect()
    width = max(len(k) for k in info)
    for key, value in info.items():
        click.echo(f"{key:<{width}}  {value}")


# --- data (r1omni_fast.data) --------------------------------------------------------------------


@main.group()
def data() -> None:
    """Synthetic data and data-file checks."""


@data.command("synth")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--n", "n", default=64, show_default=True, help="number of clips")
@click.option("--seed", default=0, show_default=True, help="same seed, byte-identical files")
@click.option("--labels", default="happy,sad,angry,neutral", show_default=True,
              help="comma-separated classes to draw")
@click.option("--test-fraction", default=0.25, show_default=True, help="held-out share per class")
@click.option("--reasoning", type=click.Choice(["full", "short"]), default="full", show_default=True,
              help="SFT reasoning: sentences about the cues, or only which cue carries the label")
@click.option("--sft-fraction", default=None, type=float,
              help="share of each class's training clips that go to sft.json only (with reasoning), the "
                   "rest to train.json only (labels): R1-Omni's small cold start and larger RL set "
                   "[default: every training clip in both]")
def data_synth(out: str, n: int, seed: int, labels: str, test_fraction: float, reasoning: str,
               sft_fraction: float | None) -> None:
    """Write synthetic clips and OUT/sft.json, OUT/train.json, OUT/test.json."""
    from r1omni_fast.data.synthetic import generate

    try:
        ds = generate(out, n=n, seed=seed, labels=[x for x in labels.split(",") if x.strip()],
                      test_fraction=test_fraction, reasoning=reasoning, sft_fraction=sft_fraction)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {len(ds.clips)} clips to {ds.root / 'clips'}")
    for path in (ds.sft, ds.train, ds.test, ds.manifest):
        click.echo(f"  {path}")


@data.command("check")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--labels", default="dfew", show_default=True,
              help="label set: dfew, mafw, ravdess, or comma-separated labels")
@click.option("--kind", type=click.Choice(["auto", "sft", "label"]), default="auto",
              show_default=True, help="sft: reasoning targets required; label: bare labels required")
def data_check(file: str, labels: str, kind: str) -> None:
    """Validate a data file and print a summary; exit status 1 if any record is bad."""
    from r1omni_fast.data import DataError
    from r1omni_fast.data.check import format_summary, label_spec_from_text, summarize

    try:
        summary = summarize(file, labels=label_spec_from_text(labels), kind=kind)
    except (DataError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(format_summary(summary))
    if not summary.ok:
        raise SystemExit(1)


# --- end data ------------------------------------------------------------------------------------


# --- model (r1omni_fast.model) -------------------------------------------------------------
@main.group()
def model() -> None:
    """Omni model utilities (HumanOmni-compatible checkpoints)."""


@model.command("tiny")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, help="Initialisation seed (same seed, same files).")
@click.option("--pretrain-towers", is_flag=True,
              help="pretrain the vision and audio towers on the synthetic generator's faces and voices "
                   "(seconds on a CPU; the LLM stays untrained), as the demo does")
def model_tiny(out: str, seed: int, pretrain_towers: bool) -> None:
    """Write the tiny HumanOmni-architecture checkpoint (config, weights, tokenizers) to OUT."""
    from r1omni_fast.model.tiny import build_tiny_checkpoint

    click.echo(build_tiny_checkpoint(out, seed=seed, pretrain_towers=pretrain_towers))
# --- end model -----------------------------------------------------------------------------



# --- eval (r1omni_fast.eval) ---------------------------------------------------------------
@main.command("eval")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="checkpoint folder (config.json, model.safetensors, tokenizer)")
@click.option("--data", "data_file", required=True, type=click.Path(exists=True, dir_okay=False),
              help="R1-Omni JSON/JSONL file with labels (media paths relative to it)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for metrics.json, predictions.jsonl, confusion_matrix.png")
@click.option("--modalities", default="video,audio", show_default=True,
              help="inputs given to the model: video,audio | video | audio")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="clips per generation batch")
@click.option("--num-frames", default=None, type=click.IntRange(min=1),
              help="frames per clip [default: the checkpoint's num_frames]")
@click.option("--max-new-tokens", default=512, show_default=True, type=click.IntRange(min=1),
              help="most tokens generated per answer")
@click.option("--prompt", default=None,
              help="instruction replacing every record's (media placeholders are added)")
@click.option("--labels", "label_spec", default="dfew", show_default=True,
              help="label set: dfew, mafw, ravdess, or comma-separated labels")
@click.option("--ablate", is_flag=True,
              help="run video+audio, video-only and audio-only; write modalities.json and .png")
@click.option("--quiet", is_flag=True, help="no progress bar")
def eval_command(model_dir: str, data_file: str, out_dir: str, modalities: str, batch_size: int,
                 num_frames: int | None, max_new_tokens: int, prompt: str | None, label_spec: str,
                 ablate: bool, quiet: bool) -> None:
    """Greedy evaluation: WAR, UAR, format rate, confusion matrix and reasoning traces.

    Answers are read with the reward parser and matched to the label set as the robust
    accuracy reward does; an answer naming no label counts as wrong.
    """
    from r1omni_fast.data import DataError
    from r1omni_fast.data.check import label_spec_from_text
    from r1omni_fast.eval.runner import ablate as run_ablation
    from r1omni_fast.eval.runner import ablation_table, evaluate, load_model, metrics_table
    from r1omni_fast.model import CheckpointError
    from r1omni_fast.model.prompt import normalise_modalities
    from r1omni_fast.labels import resolve

    ctx = click.get_current_context()
    try:
        keep = normalise_modalities(modalities)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--modalities") from None
    if ablate and ctx.get_parameter_source("modalities") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--ablate runs video+audio, video and audio itself: drop --modalities")
    try:
        labels = resolve(label_spec_from_text(label_spec))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--labels") from None
    options = dict(batch_size=batch_size, num_frames=num_frames, max_new_tokens=max_new_tokens,
                   prompt=prompt, label_set=labels, progress=not quiet)
    try:
        model = load_model(model_dir)
        if ablate:
            report = run_ablation(model, data_file, out_dir, **options)
            click.echo(ablation_table(report))
            click.echo(f"wrote {out_dir}/modalities.json, {out_dir}/modalities.png and one folder per setting")
            return
        metrics = evaluate(model, data_file, out_dir, modalities=keep, **options)
    except (CheckpointError, DataError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(metrics_table(metrics))
    click.echo(f"wrote {out_dir}/metrics.json, {out_dir}/predictions.jsonl, {out_dir}/confusion_matrix.png")
# --- end eval ------------------------------------------------------------------------------


# --- demo (r1omni_fast.demo) ---------------------------------------------------------------
@main.command("demo")
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="folder for the checkpoint, data, runs and evaluations")
@click.option("--sft-steps", default=None, type=click.IntRange(min=1),
              help="SFT optimizer steps [default: 100, configs/tiny-sft.yaml]")
@click.option("--grpo-steps", default=None, type=click.IntRange(min=1),
              help="GRPO optimizer steps [default: 120, configs/tiny-grpo.yaml]")
@click.option("--clips", default=None, type=click.IntRange(min=16),
              help="synthetic clips [default: 256]: a quarter held out, an eighth of the rest for SFT")
@click.option("--seed", default=0, show_default=True, help="seed of the checkpoint, data and training")
@click.option("--quiet", is_flag=True, help="no progress bars")
def demo(out_dir: str, sft_steps: int | None, grpo_steps: int | None, clips: int, seed: int, quiet: bool) -> None:
    """End to end on the embedded default: tiny checkpoint, synthetic clips, eval, SFT, eval,
    GRPO, eval; prints format rate, WAR and UAR per stage and writes OUT/summary.png. Minutes on a CPU."""
    import time

    from r1omni_fast.demo import demo_table, run_demo

    started = time.perf_counter()
    rows = run_demo(out_dir, sft_steps=sft_steps, grpo_steps=grpo_steps, clips=clips, seed=seed,
                    progress=not quiet, echo=click.echo)
    click.echo("")
    click.echo(demo_table(rows, out_dir))
    click.echo(f"wall time {time.perf_counter() - started:.0f} s")
# --- end demo ------------------------------------------------------------------------------

# --- train (r1omni_fast.train) -------------------------------------------------------------------


class _TrainCommand(click.Command):
    """`train` whose --help also lists every config field of each stage."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        from r1omni_fast.config import field_help

        super().format_epilog(ctx, formatter)
        for stage in ("sft", "grpo"):
            with formatter.section(f"Fields of stage {stage} (YAML keys or --flags)"):
                formatter.write_dl([(flag, f"{kind} (default {default!r}) {text}")
                                    for flag, kind, default, text in field_help(stage)])


@main.command("train", cls=_TrainCommand,
              context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="YAML run config with a `stage: sft | grpo` key")
@click.pass_context
def train(ctx: click.Context, config_path: str | None) -> None:
    """Run a training stage: r1omni-fast train --config FILE [--field value ...] [--resume].

    Flags override the YAML (--max-steps and --max_steps both work). --resume continues from the
    newest complete checkpoint in output_dir. A bad value exits with status 2 and a one-line
    error naming the field. Under torchrun (`torchrun --nproc-per-node N -m r1omni_fast train
    ...`) every rank runs it: `parallelism: ddp | fsdp` chooses how the model is spread.
    """
    import os

    from r1omni_fast.config import ConfigError, load_config
    from r1omni_fast.train.checkpoint import ResumeError

    run = _run_stage
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun shows a failed rank's traceback
        from torch.distributed.elastic.multiprocessing.errors import record

        run = record(_run_stage)
    try:
        out = run(load_config(config_path, ctx.args))
    except (ConfigError, ResumeError) as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)
    if os.environ.get("RANK", "0") == "0":
        click.echo(f"final model: {out}")


def _run_stage(cfg):
    from r1omni_fast.config import ConfigError

    if cfg.stage == "sft":
        from r1omni_fast.train.sft import run_sft

        return run_sft(cfg)
    if cfg.stage == "grpo":
        from r1omni_fast.train.grpo import run_grpo

        return run_grpo(cfg)
    raise ConfigError(f"stage {cfg.stage!r} is not a training stage: use `r1omni-fast eval`")


# --- end train -----------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
