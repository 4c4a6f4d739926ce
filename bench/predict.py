"""Clips per second of `r1omni-fast predict` against a plain transformers loop, end to end.

Both paths run the same checkpoint (the tiny omni model, or --model DIR) on the same synthetic
clips, greedy, with the same prompt, and must print the same completions:

- plain loop (the anchor): one clip at a time, decoded with PyAV (``r1omni_fast.media.pyav``,
  the reference implementation of the preprocessing), then the processor, the media encoders and
  transformers' own ``generate`` over the spliced embeddings (``model.llm.generate(inputs_embeds=...)``);
- predict: ``r1omni_fast.eval.predict.predict`` — batches of ``--batch-size`` clips decoded by
  the native loader in a background thread while the previous batch generates, one batched
  prefix-shared greedy generation per batch;
- predict with the PyAV loader: the same pipeline with the reference decoder, which separates
  what the batching buys from what the native decoder buys.

On a CUDA machine the model runs there in bf16 (fp16 where bf16 is unsupported), as predict does
by default; on CPU in fp32. Every path is warmed up on one clip first; times are wall-clock over
all clips, measured in ``--rounds`` interleaved rounds (the order rotates each round), best of
the rounds per path, so that a machine shared with other work disturbs every path alike.

    PYTHONPATH=python python bench/predict.py [--clips 32] [--batch-size 8] [--max-new-tokens 32]
        [--size 360] [--frames 48] [--device auto] [--dtype auto] [--model DIR] [--threads N]

On a CPU shared with other work, run it with ``OMP_WAIT_POLICY=PASSIVE`` (or ``--threads 1``):
torch's OpenMP threads otherwise spin at every barrier while a partner thread is descheduled,
and that waste, not the pipelines, dominates every path's time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch

from r1omni_fast.media import pyav as media_pyav
from r1omni_fast.data.synthetic import generate as synthesize
from r1omni_fast.eval.predict import PROMPT_PRESETS, ClipInput, load_for_inference, predict
from r1omni_fast.eval.runner import eval_mode
from r1omni_fast.prompts import build_instruction
from r1omni_fast.model.humanomni.tiny import build_tiny_checkpoint


def plain_loop(model, clips, max_new_tokens: int) -> list[str]:
    """One clip at a time: PyAV decode, processor, encoders, transformers' ``generate``."""
    processor = model.processor
    vision = model.preprocessor_configs.get("vision_tower", {})
    mean, std = tuple(vision.get("image_mean", (0.5,) * 3)), tuple(vision.get("image_std", (0.5,) * 3))
    instruction = build_instruction(PROMPT_PRESETS["r1omni"], format_suffix=False)
    eos = set(processor.eos_token_ids)
    texts = []
    for path in clips:
        clip = media_pyav.load_clip(path, num_frames=model.config.num_frames, image_size=model.config.vision.image_size,
                                    aspect="resize", mean=mean, std=std, n_mels=model.config.audio.num_mel_bins)
        inputs = processor([instruction], pixel_values=torch.from_numpy(clip.frames)[None],
                           audio_features=torch.from_numpy(clip.mel)[None])
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        with torch.no_grad():
            embeds = model.embed(inputs["input_ids"], pixel_values=inputs["pixel_values"],
                                 audio_features=inputs["audio_features"], bert_input_ids=inputs["bert_input_ids"],
                                 bert_attention_mask=inputs["bert_attention_mask"])
            ids = model.llm.generate(inputs_embeds=embeds, attention_mask=inputs["attention_mask"],
                                     max_new_tokens=max_new_tokens, do_sample=False,
                                     eos_token_id=sorted(eos), pad_token_id=processor.tokenizer.pad_token_id)[0].tolist()
        cut = next((i for i, t in enumerate(ids) if t in eos), len(ids))
        texts.append(processor.decode(ids[:cut]))
    return texts


def _sync(model) -> None:
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--size", type=int, default=360, help="clip width and height in pixels")
    parser.add_argument("--frames", type=int, default=48, help="frames per clip (16 fps)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--model", default=None, help="checkpoint folder (default: the tiny checkpoint)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        ckpt = args.model or build_tiny_checkpoint(Path(tmp) / "ckpt", seed=0)
        data = synthesize(Path(tmp) / "clips", n=args.clips, seed=0, size=args.size, num_frames=args.frames, fps=16)
        clips = sorted((data.root / "clips").glob("*.mp4"))
        model = load_for_inference(ckpt, args.device, args.dtype)
        items = [ClipInput(video=c) for c in clips]
        paths = {
            "plain loop (PyAV, generate)": lambda: plain_loop(model, clips, args.max_new_tokens),
            "predict, PyAV loader": lambda: [r["completion"] for r in predict(
                model, items, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                loader=media_pyav.load_batch)],
            "predict (native loader)": lambda: [r["completion"] for r in predict(
                model, items, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens)],
        }
        with eval_mode(model, model.config.num_frames):
            plain_loop(model, clips[:1], 2)  # warm-up
        predict(model, items[:1], max_new_tokens=2)
        times = {name: float("inf") for name in paths}
        outputs = {}
        names = list(paths)
        for r in range(args.rounds):
            for name in names[r % len(names):] + names[:r % len(names)]:
                _sync(model)
                start = time.perf_counter()
                with eval_mode(model, model.config.num_frames):
                    outputs[name] = paths[name]()
                _sync(model)
                times[name] = min(times[name], time.perf_counter() - start)

    device = f"{model.device.type} ({torch.cuda.get_device_name(model.device)})" if model.device.type == "cuda" else \
        f"cpu ({torch.get_num_threads()} torch threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')})"
    print(f"{'tiny omni model' if args.model is None else args.model} on {device}, {str(model.dtype).replace('torch.', '')}; "
          f"{len(clips)} clips {args.size}x{args.size}, {args.frames} frames + audio; batch {args.batch_size}; "
          f"{args.max_new_tokens} new tokens max, greedy; best of {args.rounds} interleaved rounds")
    anchor = names[0]
    print(f"{'path':<30} {'seconds':>8} {'clips/s':>8} {'vs plain loop':>14}")
    for name, t in times.items():
        print(f"{name:<30} {t:>8.2f} {len(clips) / t:>8.2f} {times[anchor] / t:>13.2f}x")
    reference = outputs[anchor]
    for name, texts in outputs.items():
        same = sum(a == b for a, b in zip(texts, reference))
        print(f"same completions as the plain loop, {name}: {same}/{len(reference)}")


if __name__ == "__main__":
    main()
