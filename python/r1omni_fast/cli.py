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


if __name__ == "__main__":
    main()
