"""Training-state memory of the Qwen2.5-Omni thinker backend: measured on the tiny thinker, then
extrapolated on paper to Qwen2.5-Omni-3B and -7B.

Measured: the bytes of every tensor a GRPO trainer holds after one optimizer step on the tiny
thinker (policy weights, gradients, AdamW moments, the reference copy of the trainable parts),
compared with the rule ``4 B x all parameters + (4 + 8) B x trainable + 4 B x trainable (reference,
beta > 0)`` (fp32 weights, bf16 autocast). Extrapolated: the same rule with the parameter counts of
the 3B and 7B thinkers, counted by building them on the meta device from their published
configs (no download). Activations and the KV cache come on top and depend on the clip length,
G and the completion length: they are not in these numbers.

Run: ``python bench/qwen_memory.py`` (CPU, ~1 min).
"""

from __future__ import annotations

import tempfile

import torch

GIB = 1024 ** 3

#: Published thinker text / tower widths (Qwen2.5-Omni-7B = transformers' config defaults;
#: 3B: the Qwen2.5-3B text model with its towers projecting to 2048).
SIZES = {
    "Qwen2.5-Omni-7B": dict(text=dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                      num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
                            out=3584),
    "Qwen2.5-Omni-3B": dict(text=dict(vocab_size=151936, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                                      num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True),
                            out=2048),
}
PARTS = ["mm_language_model", "mm_mlp_adapter", "audio_projector"]


def rule_bytes(total: int, trainable: int, reference: bool = True) -> int:
    return 4 * total + 12 * trainable + (4 * trainable if reference else 0)


def measured_tiny() -> tuple[int, int, int, int]:
    """(all params, trainable params, bytes held, bytes by the rule) after one GRPO step."""
    from r1omni_fast.model.qwen_omni.tiny import build_tiny_qwen_model

    model = build_tiny_qwen_model(0)
    model.set_trainable_parts(PARTS)
    ref = model.reference_view()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()
    seen: set = set()

    def size(tensors) -> int:
        out = 0
        for t in tensors:
            if isinstance(t, torch.Tensor) and t.data_ptr() not in seen and t.numel() > 1:
                seen.add(t.data_ptr())
                out += t.numel() * t.element_size()
        return out

    held = size(model.parameters()) + size(p.grad for p in params)
    held += size(v for state in opt.state.values() for v in state.values())
    held += size(ref.parameters())  # shared frozen tensors are already counted
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in params)
    return total, trainable, held, rule_bytes(total, trainable)


def paper(name: str) -> tuple[int, int]:
    from transformers import Qwen2_5OmniThinkerConfig, Qwen2_5OmniThinkerForConditionalGeneration

    from r1omni_fast.model.qwen_omni.policy import QwenOmniThinkerPolicy

    size = SIZES[name]
    config = Qwen2_5OmniThinkerConfig(text_config=size["text"], vision_config={"hidden_size": 1280, "out_hidden_size": size["out"]},
                                      audio_config={"output_dim": size["out"]})
    with torch.device("meta"):
        policy = QwenOmniThinkerPolicy(Qwen2_5OmniThinkerForConditionalGeneration(config))
    policy.set_trainable_parts(PARTS)
    unique = {id(p): p for p in policy.parameters()}
    total = sum(p.numel() for p in unique.values())
    trainable = sum(p.numel() for p in unique.values() if p.requires_grad)
    return total, trainable


def main() -> None:
    total, trainable, held, rule = measured_tiny()
    print(f"tiny thinker (measured): {total:,} params, {trainable:,} trainable; tensors held {held:,} B, "
          f"rule {rule:,} B (ratio {held / rule:.3f})")
    for name in SIZES:
        total, trainable = paper(name)
        full = rule_bytes(total, trainable)
        print(f"{name} (on paper): {total / 1e9:.2f} B params, {trainable / 1e9:.2f} B trainable "
              f"({', '.join(PARTS)}): {full / GIB:.0f} GiB of weights + gradients + AdamW + reference, "
              f"before activations; frozen weights alone {4 * total / GIB:.0f} GiB fp32")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
