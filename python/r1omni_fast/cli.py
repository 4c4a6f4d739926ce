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
def data_synth(out: str, n: int, seed: int, labels: str, test_fraction: float) -> None:
    """Write synthetic clips and OUT/sft.json, OUT/train.json, OUT/test.json."""
    from r1omni_fast.data.synthetic import generate

    try:
        ds = generate(out, n=n, seed=seed, labels=[x for x in labels.split(",") if x.strip()],
                      test_fraction=test_fraction)
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
def model_tiny(out: str, seed: int) -> None:
    """Write the tiny HumanOmni-architecture checkpoint (config, weights, tokenizers) to OUT."""
    from r1omni_fast.model.tiny import build_tiny_checkpoint

    click.echo(build_tiny_checkpoint(out, seed=seed))
# --- end model -----------------------------------------------------------------------------


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
    error naming the field.
    """
    from r1omni_fast.config import ConfigError, load_config

    try:
        cfg = load_config(config_path, ctx.args)
        if cfg.stage == "sft":
            from r1omni_fast.train.sft import run_sft

            out = run_sft(cfg)
        elif cfg.stage == "grpo":
            from r1omni_fast.train.grpo import run_grpo

            out = run_grpo(cfg)
        else:
            raise ConfigError(f"stage {cfg.stage!r} is not a training stage: use `r1omni-fast eval`")
    except ConfigError as exc:
        click.echo(f"error: {exc}", err=True)
        ctx.exit(2)
    click.echo(f"final model: {out}")


# --- end train -----------------------------------------------------------------------------------


if __name__ == "__main__":
    main()
