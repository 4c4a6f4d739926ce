"""The ``r1omni-fast`` command line."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Sequence

import click

import r1omni_fast
from r1omni_fast.threads import configure_cpu_threads

# Before anything imports torch: OpenMP threads sleep instead of spinning while they wait, so
# that processes sharing the machine slow each other down fairly (r1omni_fast/threads.py).
configure_cpu_threads()


# --- exit status (every command; docs/troubleshooting.md "Exit status of every command") ----------------------------------------
from r1omni_fast.exit_status import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE  # noqa: E402


class CommandError(click.ClickException):
    """One line ``Error: MESSAGE`` on stderr and the exit status of its kind (:data:`EXIT_FAILED`
    or :data:`EXIT_USAGE`), without click's usage banner."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def bad_input(message: str) -> CommandError:
    """A :class:`CommandError` with :data:`EXIT_USAGE` (bad flags, config, data, model, device)."""
    return CommandError(message, EXIT_USAGE)


_OS_HINTS = {errno.ENOSPC: "free space there or write elsewhere", errno.EDQUOT: "free space there or write elsewhere",
             errno.EROFS: "choose a folder you can write to", errno.EACCES: "choose a folder you can write to",
             errno.EPERM: "choose a folder you can write to"}


def _os_error_line(exc: OSError, what: str = "") -> str:
    where = f"{exc.filename}: " if exc.filename else ""
    hint = _OS_HINTS.get(exc.errno)
    return f"{what}{where}{exc.strerror or exc}" + (f": {hint}" if hint else "")


def check_output(path: str | os.PathLike, what: str, shown: str | os.PathLike | None = None) -> Path:
    """Before any work, that ``path`` (a folder to create or fill, or the folder of an output
    file) can be written: its nearest existing folder takes a probe file. Raises a
    :class:`CommandError` naming ``what`` and ``path``: :data:`EXIT_USAGE` when a part of the
    path is a file, :data:`EXIT_FAILED` when the folder cannot be written (read-only, full,
    no permission). ``shown``: the path named in messages (default ``path``; an output file whose
    folder is checked). Creates nothing; returns the folder probed."""
    shown = path if shown is None else shown
    target = Path(path).absolute()
    base = target
    while not base.exists() and base != base.parent:
        base = base.parent
    if not base.is_dir():
        raise bad_input(f"{what} {shown}: {base} is a file, not a folder: choose another path")
    try:
        fd, probe = tempfile.mkstemp(dir=base, prefix=".probe-")
        try:
            os.write(fd, b"0")
            os.fsync(fd)
        finally:
            os.close(fd)
            os.unlink(probe)
    except OSError as exc:
        exc.filename = None  # the probe's name means nothing to the user
        raise CommandError(_os_error_line(exc, f"{what} {shown}: cannot write in {base}: ")) from None
    return base


def refuse_same_path(output: str | os.PathLike | None, inputs: Sequence, what: str) -> None:
    """:data:`EXIT_USAGE` naming both when the output path ``output`` is one of ``inputs`` (the
    same file by its resolved path, or an existing file by inode): writing it would destroy the
    input before (or while) it is read."""
    if output is None:
        return
    out = Path(output)
    for item in inputs:
        if item is None:
            continue
        src = Path(item)
        same = out.resolve() == src.resolve()
        if not same and out.exists() and src.exists():
            with contextlib.suppress(OSError):
                same = os.path.samefile(out, src)
        if same:
            raise bad_input(f"{what} {output} is also an input ({item}): writing it would destroy the input; "
                            "choose another output path")


def _refuse_non_output_folder(out: str, marker: str, kind: str) -> None:
    """:data:`EXIT_USAGE` when ``out`` is a non-empty folder without ``marker``: the command
    replaces the folder whole, which would delete what the user keeps there."""
    folder = Path(out)
    if folder.is_dir() and any(folder.iterdir()) and not (folder / marker).is_file():
        raise bad_input(f"{out} is a folder holding other files (no {marker}): give a new or empty folder, or {kind} "
                        "to replace")


class Terminated(KeyboardInterrupt):
    """SIGTERM received: raised where the command is, so it unwinds through the same clean-up as
    Ctrl-C (a KeyboardInterrupt), then exits :data:`EXIT_TERMINATED` instead of 130."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


class _Main(click.Group):
    """The command group: every command's Ctrl-C is :data:`EXIT_INTERRUPTED` with one line, its
    SIGTERM :data:`EXIT_TERMINATED` with one line (a training run replaces this handler while it
    trains: it saves and exits 75), and an OSError that escapes a command (a full disk, a
    read-only folder) one line and :data:`EXIT_FAILED`, never a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        import signal
        import threading

        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            return super().invoke(ctx)
        except Terminated:
            click.echo("stopped by SIGTERM", err=True)
            ctx.exit(EXIT_TERMINATED)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except OSError as exc:
            if exc.strerror is None:  # not a system error: let it show
                raise
            raise CommandError(_os_error_line(exc)) from None
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(r1omni_fast.__version__, "--version", "-V", prog_name="r1omni-fast")
def main() -> None:
    """Train and evaluate omni-modal emotion-recognition models with SFT and GRPO (R1-Omni).

    Exit status of every command: 0 done; 1 a runtime failure (the work could not finish); 2 a
    usage, config or data error (bad flags or values, a bad or empty data file, a missing or
    incomplete model folder, a device that is not there); 75 stopped by SIGTERM after saving;
    130 interrupted (Ctrl-C); 143 stopped by SIGTERM with nothing to save.
    """


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
    """Synthetic data, data-file checks and importers of public datasets."""


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

    check_output(out, "OUT")
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
              help="label set: dfew, mafw, ravdess, any (SFT data: any answer), or comma-separated labels")
@click.option("--kind", type=click.Choice(["auto", "sft", "label"]), default="auto",
              show_default=True, help="sft: reasoning targets required; label: bare labels required")
@click.option("--decode", default=0, show_default=True, type=click.IntRange(min=0),
              help="also decode N clips spread over the file with the media loader (8 frames, 224 px, audio)")
def data_check(file: str, labels: str, kind: str, decode: int) -> None:
    """Validate a data file and print a summary; exit status 1 if any record is bad, a clip
    fails to open or decode, or (``--decode``) a record's prompt asks for a modality its clip
    lacks (``<audio>`` and no audio stream); 2 when the file cannot be read at all (or is empty)."""
    from r1omni_fast.data import DataError
    from r1omni_fast.data.check import format_summary, label_spec_from_text, summarize

    try:
        summary = summarize(file, labels=label_spec_from_text(labels), kind=kind, decode=decode)
    except (DataError, ValueError) as exc:
        raise bad_input(str(exc)) from None
    click.echo(format_summary(summary))
    if not summary.ok:  # the check's verdict: it ran and found bad records or clips
        raise SystemExit(EXIT_FAILED)


def _int_list(text: str | None) -> list[int]:
    try:
        return [int(x) for x in (text or "").replace(" ", "").split(",") if x]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}") from None


@data.command("import")
@click.argument("dataset", type=click.Choice(["dfew", "mafw", "ravdess", "cremad", "meld", "r1omni"]))
@click.argument("src", type=click.Path(exists=True))
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--labels", default=None,
              help="label set the labels map onto: dfew, mafw, ravdess, any, or comma-separated labels "
                   "[default: mafw for mafw and r1omni, ravdess for ravdess, else dfew]")
@click.option("--folds", default=None, help="DFEW/MAFW: comma-separated folds to write, e.g. 1,2 [default: all]")
@click.option("--calm", type=click.Choice(["keep", "neutral", "drop"]), default="keep", show_default=True,
              help="RAVDESS: calm as its own class, merged into neutral, or left out")
@click.option("--test-actors", default=None,
              help="RAVDESS/CREMA-D: comma-separated actor numbers for test.json, the rest to train.json "
                   "[default: every clip in all.json]")
@click.option("--with-format", is_flag=True,
              help="end the human turn with the <think>/<answer> format instruction (R1-Omni's data has none; "
                   "its GRPO adds it, here prompt_style: r1omni does)")
@click.option("--clips", default=None, type=click.Path(exists=True, file_okay=False),
              help="DFEW/MAFW: the folder holding the clips [default: searched under SRC]")
@click.option("--media-root", default=None, type=click.Path(exists=True, file_okay=False),
              help="r1omni: what the file's media paths are relative to [default: the file's folder]")
def data_import(dataset: str, src: str, out: str, labels: str | None, folds: str | None, calm: str,
                test_actors: str | None, with_format: bool, clips: str | None, media_root: str | None) -> None:
    """Write R1-Omni JSON files (one per split, media paths relative to OUT) from a dataset's released
    layout under SRC: DFEW's and MAFW's 5-fold split files, RAVDESS's and CREMA-D's file-name codes,
    MELD's CSV splits, or an R1-Omni JSON file whose paths are relative to another folder.

    Prints the files written with their counts per class, then every row not imported, with its file
    and line. Exit status 1 when nothing could be imported."""
    from r1omni_fast.data.check import label_spec_from_text
    from r1omni_fast.data.importers import DatasetLayoutError, format_import_summary, import_dataset

    check_output(out, "OUT")
    try:
        result = import_dataset(dataset, src, out, labels=label_spec_from_text(labels), folds=_int_list(folds),
                                calm=calm, test_actors=_int_list(test_actors), with_format=with_format,
                                clips=clips, media_root=media_root)
    except (DatasetLayoutError, ValueError) as exc:
        raise bad_input(str(exc)) from None
    click.echo(format_import_summary(result))
    if not result.num_records:
        raise CommandError(f"no record of {src} could be imported (the rows above say why)")


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
@click.option("--arch", type=click.Choice(["humanomni", "qwen2_5_omni", "qwen3_omni_moe"]), default="humanomni",
              show_default=True, help="the backend (r1omni_fast.model.policy.SPECS): humanomni (HumanOmni / R1-Omni), "
                                      "qwen2_5_omni (a Qwen2.5-Omni thinker) or qwen3_omni_moe (a Qwen3-Omni MoE thinker)")
def model_tiny(out: str, seed: int, pretrain_towers: bool, arch: str) -> None:
    """Write a tiny checkpoint (config, weights, tokenizers / processor) to OUT (built beside it and
    renamed into place: OUT holds the whole checkpoint or what it held before)."""
    from r1omni_fast.model.policy import SPECS
    from r1omni_fast.model.tiny import write_checkpoint_folder

    spec = SPECS[arch]
    options = {"pretrain_towers": True} if pretrain_towers else {}
    unsupported = sorted(set(options) - set(spec.tiny_options))
    if unsupported:
        takers = [s.name for s in SPECS.values() if set(unsupported) <= set(s.tiny_options)]
        raise click.UsageError(f"--{unsupported[0].replace('_', '-')} is for --arch {' or '.join(takers)} only")
    _refuse_non_output_folder(out, "config.json", "a model folder")
    check_output(out, "OUT")

    def build():
        return spec.tiny_builder()(seed, **options)

    click.echo(write_checkpoint_folder(out, build))
# --- end model -----------------------------------------------------------------------------


# --- merge (r1omni_fast.model.lora) ------------------------------------------------------------
@main.command("merge")
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="a LoRA adapter folder: the output or a checkpoint of a use_peft run")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="folder for the merged model (config.json, model.safetensors, tokenizers, towers)")
@click.option("--base", default=None, type=click.Path(exists=True, file_okay=False),
              help="the base model folder [default: base_model_name_or_path of adapter_config.json]")
def merge_command(model_dir: str, out_dir: str, base: str | None) -> None:
    """Merge the LoRA adapter of MODEL into its base model and write a full checkpoint to OUT
    (what eval, predict and a next training stage load like any checkpoint)."""
    from r1omni_fast.model import CheckpointError
    from r1omni_fast.model.lora import LoraError, merge

    try:
        click.echo(f"merged model: {merge(model_dir, out_dir, base=base)}")
    except (LoraError, CheckpointError, FileNotFoundError) as exc:
        raise bad_input(str(exc)) from None
# --- end merge -----------------------------------------------------------------------------



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
@click.option("--prompt-preset", type=click.Choice(["r1omni-eval", "r1omni-infer", "humanomni-eval"]),
              default=None,
              help="a published instruction instead of the records': r1omni-eval (R1-Omni's DFEW/MAFW "
                   "evaluation question), r1omni-infer (its inference example, with the format instruction), "
                   "humanomni-eval (HumanOmni's question with the DFEW or MAFW class list)")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N")
@click.option("--dtype", default="auto", show_default=True,
              help="weights: auto (bf16 on CUDA, fp16 where it has no bf16; fp32 on CPU), float32, bfloat16, float16")
@click.option("--answer-matching", type=click.Choice(["robust", "r1omni", "raw"]), default="robust",
              show_default=True,
              help="robust: the label the answer names (aliases, any case); r1omni: R1-Omni's accuracy "
                   "reward (the <answer> text equal to the gpt value); raw: the whole response equal to "
                   "the gpt value, as R1-Omni's evaluation script")
@click.option("--aspect", type=click.Choice(["resize", "pad"]), default="resize", show_default=True,
              help="frames squashed to a square (HumanOmni's evaluation) or padded to one (its training; "
                   "what a run's in-training evaluation uses with image_aspect_ratio: pad)")
@click.option("--prompt-layout", type=click.Choice(["data", "humanomni"]), default="data", show_default=True,
              help="humanomni: the user turn laid out as HumanOmni's SFT (placeholders in front, three newlines, "
                   "its BERT text), as an SFT run with prompt_style: humanomni trained and evaluates")
@click.option("--chat-template", type=click.Choice(["checkpoint", "qwen2vl"]), default="checkpoint",
              show_default=True, help="the checkpoint's chat template, or Qwen2-VL's as R1-Omni's GRPO rendered it")
@click.option("--explain/--no-explain", default=True, show_default=True,
              help="faithfulness of the reasoning (r1omni_fast.eval.faithfulness): cue agreement where records "
                   "have a cue field, reasoning emotion vs answer and label; with --ablate also counterfactual "
                   "attribution")
@click.option("--reasoning-classifier", default=None,
              help="what reads the emotion a trace expresses: lexicon (default), a local transformers "
                   "sequence-classification folder, or module:function (texts -> labels)")
@click.option("--early-answering", is_flag=True,
              help="also answer every clip again with its reasoning cut to 0, 50 and 100 %% of its tokens and "
                   "report how often the answer changes (Lanham et al.'s test; three more passes)")
@click.option("--quiet", is_flag=True, help="no progress bar")
def eval_command(model_dir: str, data_file: str, out_dir: str, modalities: str, batch_size: int,
                 num_frames: int | None, max_new_tokens: int, prompt: str | None, label_spec: str,
                 ablate: bool, prompt_preset: str | None, device: str, dtype: str, answer_matching: str,
                 aspect: str, prompt_layout: str, chat_template: str, explain: bool,
                 reasoning_classifier: str | None, early_answering: bool, quiet: bool) -> None:
    """Greedy evaluation: WAR, UAR, format rate, confusion matrix and reasoning traces.

    Answers are matched to the labels as --answer-matching says (default: as the robust accuracy
    reward reads them); an answer naming no label counts as wrong.
    """
    from r1omni_fast.data import DataError, read_data
    from r1omni_fast.data.check import label_spec_from_text
    from r1omni_fast.eval.runner import OUTPUT_FILES, ablation_table, eval_prompt, evaluate, metrics_table
    from r1omni_fast.eval.faithfulness import EARLY_ANSWERING_CUTS
    from r1omni_fast.eval.runner import ablate as run_ablation
    from r1omni_fast.prompts import normalise_modalities
    from r1omni_fast.labels import resolve_closed

    ctx = click.get_current_context()
    try:
        keep = normalise_modalities(modalities)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--modalities") from None
    if ablate and ctx.get_parameter_source("modalities") is not click.core.ParameterSource.DEFAULT:
        raise click.UsageError("--ablate runs video+audio, video and audio itself: drop --modalities")
    try:
        labels = resolve_closed(label_spec_from_text(label_spec))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--labels") from None
    if prompt_preset is not None:
        if prompt is not None:
            raise click.UsageError("--prompt and --prompt-preset both name the instruction: give one")
        try:
            prompt = eval_prompt(prompt_preset, labels)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--prompt-preset") from None
    if reasoning_classifier is not None and not explain:
        raise click.UsageError("--reasoning-classifier is for the faithfulness metrics: drop it or --no-explain")
    if early_answering and not explain:
        raise click.UsageError("--early-answering is a faithfulness metric: drop it or --no-explain")
    classifier = None
    if explain:
        from r1omni_fast.reasoning_emotion import ClassifierError, load_classifier

        try:
            classifier = load_classifier(reasoning_classifier, labels)
        except ClassifierError as exc:
            raise click.BadParameter(str(exc), param_hint="--reasoning-classifier") from None
    options = dict(batch_size=batch_size, num_frames=num_frames, max_new_tokens=max_new_tokens,
                   prompt=prompt, label_set=labels, progress=not quiet, answer_matching=answer_matching,
                   aspect=aspect, prompt_layout=prompt_layout, chat_template=chat_template, explain=explain,
                   reasoning_classifier=classifier, early_answering=EARLY_ANSWERING_CUTS if early_answering else None)
    # every check before the model loads or a clip is decoded: device, data file, output folder
    _inference_settings(device, dtype)
    try:
        datafile = read_data(data_file, labels=labels, on_error="skip")
    except DataError as exc:
        raise bad_input(str(exc)) from None
    if explain:
        from r1omni_fast.grounding import parse_cue

        try:
            for s in datafile.samples:
                parse_cue(s.extra.get("cue"), where=f"{s.source} (record {s.id}), its cue field")
        except ValueError as exc:
            raise bad_input(str(exc)) from None
    written = [Path(out_dir) / name for name in OUTPUT_FILES]
    for path in written:
        refuse_same_path(path, [data_file], "--out")
    check_output(out_dir, "--out")
    model = _load_model(model_dir, device, dtype, quiet)
    try:
        if ablate:
            report = run_ablation(model, datafile, out_dir, **options)
            click.echo(ablation_table(report))
            click.echo(f"wrote {out_dir}/modalities.json, {out_dir}/modalities.png and one folder per setting")
            return
        metrics = evaluate(model, datafile, out_dir, modalities=keep, **options)
    except DataError as exc:
        raise bad_input(str(exc)) from None
    except ValueError as exc:  # no clip could be loaded
        raise CommandError(str(exc)) from None
    click.echo(metrics_table(metrics))
    click.echo("wrote " + ", ".join(f"{out_dir}/{name}" for name in OUTPUT_FILES if (Path(out_dir) / name).is_file()))
# --- end eval ------------------------------------------------------------------------------


def _inference_settings(device: str, dtype: str) -> None:
    """:data:`EXIT_USAGE` for a --device that is not there or an unknown --dtype (eval, predict)."""
    from r1omni_fast.eval.predict import choose_device, choose_dtype

    try:
        choose_dtype(dtype, choose_device(device))
    except ValueError as exc:
        raise bad_input(str(exc)) from None


def _load_model(model_dir: str, device: str, dtype: str, quiet: bool = False):
    """The checkpoint for eval / predict; a missing, incomplete or damaged folder is
    :data:`EXIT_USAGE` with its one line. ``quiet``: without transformers' loading bars."""
    from r1omni_fast.eval.predict import load_for_inference
    from r1omni_fast.model import CheckpointError
    from r1omni_fast.model.lora import LoraError

    if quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    try:
        return load_for_inference(model_dir, device, dtype)
    except (CheckpointError, FileNotFoundError, LoraError) as exc:
        raise bad_input(str(exc)) from None


# --- predict (r1omni_fast.eval.predict) ----------------------------------------------------
@main.command("predict")
@click.argument("clips", nargs=-1, type=click.Path())
@click.option("--model", "model_dir", required=True, type=click.Path(exists=True, file_okay=False),
              help="checkpoint folder (config.json, model.safetensors, tokenizer)")
@click.option("--data", "data_file", default=None, type=click.Path(exists=True, dir_okay=False),
              help="R1-Omni JSON/JSONL file: its clips, labels and prompts")
@click.option("--glob", "globs", multiple=True, help="clips matching a pattern, e.g. 'dir/**/*.mp4' (repeatable)")
@click.option("--audio", "audio", multiple=True, type=click.Path(),
              help="separate audio file, once per clip in the same order")
@click.option("--out", "out_file", default=None, type=click.Path(dir_okay=False),
              help="write one JSON row per clip to this .jsonl file")
@click.option("--report", "report_file", default=None, type=click.Path(dir_okay=False),
              help="write report.html here [default with --data and --out: report.html beside --out]")
@click.option("--no-report", is_flag=True, help="write no report.html")
@click.option("--modalities", default="video,audio", show_default=True,
              help="inputs given to the model: video,audio | video | audio")
@click.option("--prompt", default=None, help="instruction replacing the default / the records' ones")
@click.option("--prompt-preset", default=None, help="named instruction: r1omni (default), r1omni-infer, r1omni-labels, question")
@click.option("--num-generations", default=1, show_default=True, type=click.IntRange(min=1),
              help="1: greedy; N > 1: N sampled answers and their vote share")
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="sampling temperature (with --num-generations > 1)")
@click.option("--top-p", default=1.0, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="nucleus sampling (with --num-generations > 1)")
@click.option("--seed", default=0, show_default=True, help="seed of the sampled answers (clip i uses seed + i)")
@click.option("--max-new-tokens", default=512, show_default=True, type=click.IntRange(min=1),
              help="most tokens generated per answer")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="clips per generation batch (the next batch decodes meanwhile)")
@click.option("--num-frames", default=None, type=click.IntRange(min=1),
              help="frames per clip [default: the checkpoint's num_frames]")
@click.option("--labels", "label_spec", default=None,
              help="label set answers are matched to: dfew, mafw, ravdess, or comma-separated labels "
                   "[default: dfew]")
@click.option("--device", default="auto", show_default=True, help="auto (CUDA when present), cpu, cuda, cuda:N")
@click.option("--dtype", default="auto", show_default=True,
              help="auto (bf16 on CUDA, fp16 where bf16 is unsupported, fp32 on CPU), float32, bfloat16, float16")
@click.option("--quiet", is_flag=True,
              help="print nothing per clip, only the summary (errors still go to stderr)")
def predict_command(clips: tuple, model_dir: str, data_file: str | None, globs: tuple, audio: tuple,
                    out_file: str | None, report_file: str | None, no_report: bool, modalities: str,
                    prompt: str | None, prompt_preset: str | None, num_generations: int, temperature: float,
                    top_p: float, seed: int, max_new_tokens: int, batch_size: int, num_frames: int | None,
                    label_spec: str | None, device: str, dtype: str, quiet: bool) -> None:
    """Answer and reasoning of the model for each clip: r1omni-fast predict --model DIR CLIP...

    Clips come from the arguments (a folder stands for the clips in it), --glob patterns and/or
    --data. Each clip's answer and reasoning are printed; --out writes one JSON row per clip
    (video, answer, label, think, completion, well_formed, modalities, elapsed_s, ...). A clip
    that cannot be loaded is reported (stderr, and its row's "error") and the others go on.
    With --data, the labels give WAR / UAR and report.html is written beside --out.

    Exit status: 0 when at least one clip was predicted, 1 when none could be, 2 for bad
    options, no clip found (missing paths, a folder without clips, a --glob matching nothing), a
    bad or empty --data file, a missing or incomplete model folder, an output path that is also
    an input or another output.
    """
    import json
    from pathlib import Path

    from r1omni_fast.data import DataError
    from r1omni_fast.data.check import label_spec_from_text
    from r1omni_fast.eval import predict as pred
    from r1omni_fast.labels import resolve_closed
    from r1omni_fast.prompts import normalise_modalities

    try:
        keep = normalise_modalities(modalities)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--modalities") from None
    if not clips and not globs and data_file is None:
        raise click.UsageError("no clips: give CLIP paths, --glob 'dir/**/*.mp4' or --data FILE")
    try:
        labels = resolve_closed(label_spec_from_text(label_spec)) if label_spec is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--labels") from None
    items, problems = [], []
    try:
        paths, problems = pred.gather_clips(clips, globs)
        items = pred.clip_inputs(paths, audio)
        if audio and data_file is not None:
            raise ValueError("--audio pairs with CLIP arguments; in --data give each record an \"audio\" path")
        if data_file is not None:
            records, file_labels = pred.data_inputs(data_file, labels)
            items += records
            labels = labels or file_labels
        instruction = pred.prompt_text(prompt, prompt_preset, labels)
    except DataError as exc:
        raise bad_input(str(exc)) from None
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if not items:  # nothing to try: the paths and patterns themselves are the bad input (one line)
        raise bad_input("no clips to predict" + (f": {'; '.join(problems)}" if problems else ""))
    for line in problems:
        click.echo(f"error: {line}", err=True)
    want_report = not no_report and (report_file is not None or (data_file is not None and out_file is not None))
    if want_report and report_file is None:
        report_file = str(Path(out_file).with_name("report.html"))
    # before the model loads: no output may overwrite an input, and each output's folder must take a file
    inputs = [data_file, model_dir] + [p for item in items for p in (item.video, item.audio)]
    for flag, path in (("--out", out_file), ("--report", report_file if want_report else None)):
        if path is not None:
            refuse_same_path(path, inputs, flag)
            check_output(Path(path).parent, flag, shown=path)
    if want_report and out_file is not None and Path(report_file).resolve() == Path(out_file).resolve():
        raise bad_input(f"--report {report_file} is also --out {out_file}: the report would overwrite the predictions; "
                        "choose another --report path (or --no-report)")
    _inference_settings(device, dtype)
    model = _load_model(model_dir, device, dtype, quiet)

    previews: dict | None = {} if want_report else None
    rows = []
    sink = None
    if out_file is not None:
        Path(out_file).parent.mkdir(parents=True, exist_ok=True)
        sink = open(out_file, "w", encoding="utf-8")
    try:
        for row in pred.predict_iter(model, items, modalities=keep, prompt=instruction,
                                     num_generations=num_generations, temperature=temperature, top_p=top_p,
                                     seed=seed, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                     num_frames=num_frames, label_set=labels, previews=previews):
            rows.append(row)
            if sink is not None:
                sink.write(json.dumps(row, ensure_ascii=False) + "\n")
                sink.flush()
            if row["error"] is not None:
                click.echo(f"error: {row['error']}", err=True)
            elif row["silent_audio"]:
                click.echo(f"note: {row['video']} has no audio track: the model heard silence for it "
                           "(--modalities video leaves the audio out, --audio FILE gives it sound)", err=True)
            elif not quiet:
                click.echo(_format_prediction(row, len(rows), len(items)))
    finally:
        if sink is not None:
            sink.close()
    done = [r for r in rows if r["error"] is None]
    metrics = pred.labelled_metrics(rows, labels)
    if metrics is not None:  # the summary is the result: --quiet drops only the per-clip lines
        from r1omni_fast.eval.runner import metrics_table

        click.echo(metrics_table(metrics, listed_in="the rows' error field" + (f" of {out_file}" if out_file else "")))
    if want_report and done:
        from r1omni_fast.eval.report import write_report

        if metrics is not None:
            metrics.update(model=model_dir, data=data_file, modalities=list(keep))
        title = (f"Predictions of {model_dir}" if metrics is None else
                 f"Predictions of {model_dir}: WAR {metrics['war']:.3f}, UAR {metrics['uar']:.3f} (n={metrics['n']})")
        write_report(report_file, done, metrics=metrics, previews=previews, title=title,
                     failed=[{"video": r["video"], "error": r["error"]} for r in rows if r["error"] is not None])
    written = [p for p in (out_file, report_file if want_report and done else None) if p]
    click.echo(f"{len(done)} of {len(rows)} clips predicted" + (f"; wrote {', '.join(written)}" if written else ""))
    if not done:
        raise CommandError(f"none of the {len(rows)} clips could be predicted")


def _format_prediction(row: dict, i: int, n: int) -> str:
    head = f"[{i}/{n}] {row['video']}"
    if row["label"] is not None:
        head += f"  label: {row['label']}  ({'right' if row['correct'] else 'wrong'})"
    answer = "(no <answer> block)" if row["answer"] is None else (row["answer"].strip() or "(empty)")
    if row["prediction"] is not None and row["prediction"] != (row["answer"] or "").strip():
        answer += f" -> {row['prediction']}"
    lines = [head, f"  answer: {answer}"]
    if row["votes"]:
        lines[-1] += "  (" + ", ".join(f"{k or '(empty)'} {v:.0%}" for k, v in row["votes"].items()) + ")"
    think = row["think"] if row["think"] is not None else f"(no <think> block) {row['completion']}"
    lines.append(f"  reasoning: {' '.join(think.split())}")
    return "\n".join(lines)
# --- end predict ---------------------------------------------------------------------------


# --- demo (r1omni_fast.demo) ---------------------------------------------------------------
@main.command("demo")
@click.option("--out", "out_dir", default="runs/demo", show_default=True, type=click.Path(file_okay=False),
              help="folder for the checkpoint, data, runs and evaluations")
@click.option("--sft-steps", default=None, type=click.IntRange(min=1),
              help="SFT optimizer steps [default: 100, configs/tiny-sft.yaml]")
@click.option("--grpo-steps", default=None, type=click.IntRange(min=1),
              help="GRPO optimizer steps [default: 120, configs/tiny-grpo.yaml]")
@click.option("--clips", default=None, type=click.IntRange(min=16),
              help="synthetic clips [default: 256]: a quarter held out; of the rest 2% (at least one per class: "
                   "4 of 192 at 256) for the SFT cold start, the others for GRPO")
@click.option("--seed", default=0, show_default=True, help="seed of the checkpoint, data and training")
@click.option("--grounding/--no-grounding", default=False, show_default=True,
              help="also run GRPO with the cue_grounding reward added (the grpo-grounded row: a second GRPO "
                   "run, which makes the demo about 1.5 times as long)")
@click.option("--quiet", is_flag=True, help="no progress bars")
def demo(out_dir: str, sft_steps: int | None, grpo_steps: int | None, clips: int, seed: int, grounding: bool,
         quiet: bool) -> None:
    """End to end on the embedded default: tiny checkpoint, synthetic clips, eval, SFT, eval,
    GRPO, eval, and with --grounding GRPO with the grounding reward, eval; prints format rate,
    WAR, UAR and the reasoning's faithfulness per stage and writes OUT/summary.png. Minutes on a CPU."""
    import time

    from r1omni_fast.demo import demo_table, run_demo

    check_output(out_dir, "--out")
    started = time.perf_counter()
    with _recipe_errors():
        rows = run_demo(out_dir, sft_steps=sft_steps, grpo_steps=grpo_steps, clips=clips, seed=seed,
                        progress=not quiet, echo=click.echo, grounding=grounding)
    click.echo("")
    click.echo(demo_table(rows, out_dir))
    click.echo(f"wall time {time.perf_counter() - started:.0f} s")


@contextlib.contextmanager
def _recipe_errors():
    """demo and study: bad settings or data are :data:`EXIT_USAGE`, a failed training a command
    error, a preempted one exits with its status after saying so."""
    from r1omni_fast.config import ConfigError
    from r1omni_fast.data import DataError
    from r1omni_fast.model import CheckpointError
    from r1omni_fast.train.faults import Preempted, TrainingError

    try:
        yield
    except (ConfigError, DataError, CheckpointError) as exc:
        raise bad_input(str(exc)) from None
    except TrainingError as exc:
        raise CommandError(str(exc)) from None
    except Preempted as exc:
        click.echo(str(exc), err=True)
        click.get_current_context().exit(exc.exit_status)
# --- end demo ------------------------------------------------------------------------------


# --- study (r1omni_fast.study) -------------------------------------------------------------
@main.command("study")
@click.argument("name", type=click.Choice(["cold-start", "modality-dropout", "rewards"]))
@click.option("--seeds", default="0,1,2", show_default=True, help="comma-separated seeds, one demo run each per cell")
@click.option("--out", "out_dir", default="runs/study", show_default=True, type=click.Path(file_okay=False),
              help="folder of the studies (OUT/NAME/: one folder per seed, table.md, table.json, plot.png)")
@click.option("--sft-steps", default=None, type=click.IntRange(min=1),
              help="SFT optimizer steps [default: the demo's 100]")
@click.option("--grpo-steps", default=None, type=click.IntRange(min=1),
              help="GRPO optimizer steps [default: the demo's 120]")
@click.option("--clips", default=None, type=click.IntRange(min=16), help="synthetic clips [default: the demo's 256]")
@click.option("--quiet", is_flag=True, help="no progress bars")
def study(name: str, seeds: str, out_dir: str, sft_steps: int | None, grpo_steps: int | None, clips: int | None,
          quiet: bool) -> None:
    """One of the paper's ablations on the demo's data, over seeds: cold-start (SFT on 0 / 1 / 4 / 16
    clips), modality-dropout (off / on) or rewards (accuracy / + format / + cue_grounding). Prints
    WAR, UAR, format and faithfulness as mean ± std per cell; resumes a stopped study (a finished
    cell is not rerun)."""
    import time

    from r1omni_fast.study import parse_seeds, plan_study, run_study, study_table

    try:
        seed_list = parse_seeds(seeds)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--seeds") from None
    try:
        plan_study(name, clips)
    except ValueError as exc:
        raise bad_input(str(exc)) from None
    check_output(out_dir, "--out")
    started = time.perf_counter()
    with _recipe_errors():
        table = run_study(name, out_dir, seed_list, sft_steps=sft_steps, grpo_steps=grpo_steps, clips=clips,
                          progress=not quiet, echo=click.echo)
    folder = Path(out_dir) / name
    click.echo("")
    click.echo(study_table(table))
    click.echo(f"wrote {folder / 'table.md'}, {folder / 'table.json'}, {folder / 'plot.png'}")
    click.echo(f"wall time {time.perf_counter() - started:.0f} s")
# --- end study -----------------------------------------------------------------------------

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
    error naming the field; a run that cannot go on (non-finite steps, unloadable data, a full
    disk) with status 1. SIGTERM or SIGUSR1 finish the step, write a checkpoint and exit with
    status 75 (SIGINT: 130). Under torchrun (`torchrun --nproc-per-node N -m r1omni_fast train
    ...`) every rank runs it: `parallelism: ddp | fsdp` chooses how the model is spread.
    """
    import os

    from r1omni_fast.config import ConfigError, load_config
    from r1omni_fast.train.checkpoint import ResumeError, latest_checkpoint
    from r1omni_fast.train.faults import Preempted, TrainingError

    run = _run_stage
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # torchrun shows a failed rank's traceback
        from torch.distributed.elastic.multiprocessing.errors import record

        run = record(_run_stage)
    cfg = None
    try:
        cfg = load_config(config_path, ctx.args)
        out = run(cfg)
    except (ConfigError, ResumeError) as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_USAGE)
    except TrainingError as exc:
        click.echo(f"Error: {exc}", err=True)
        ctx.exit(EXIT_FAILED)
    except Preempted as exc:
        click.echo(str(exc), err=True)
        ctx.exit(exc.exit_status)
    except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM before the training loop took the signals over
        newest = latest_checkpoint(cfg.output_dir) if cfg is not None and hasattr(cfg, "output_dir") else None
        kept = f"the newest checkpoint is {newest}" if newest is not None else "no checkpoint was written"
        how = "stopped by SIGTERM" if isinstance(exc, Terminated) else "interrupted"
        click.echo(f"{how}: stopped without saving; {kept}", err=True)
        ctx.exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
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
