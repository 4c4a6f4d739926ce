"""Training-state memory of the Qwen thinker backends: measured on the tiny Qwen2.5-Omni thinker,
then extrapolated on paper to Qwen2.5-Omni-3B and -7B and, with LoRA, Qwen3-Omni-30B-A3B's MoE
thinker.

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
#: Qwen3-Omni-30B-A3B's thinker widths (its model card's config: Qwen3-30B-A3B's MoE text model,
#: 48 layers of 128 experts, 8 active; a 27-block vision tower with DeepStack mergers; a 32-layer
#: audio encoder), as written here: not read from a downloaded config.json.
QWEN3_SIZES = {
    "Qwen3-Omni-30B-A3B": dict(
        text=dict(vocab_size=152064, hidden_size=2048, intermediate_size=768, moe_intermediate_size=768,
                  num_hidden_layers=48, num_attention_heads=32, num_key_value_heads=4, head_dim=128, num_experts=128,
                  num_experts_per_tok=8, tie_word_embeddings=False,
                  rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [24, 20, 20]}),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=2048,
                    patch_size=16, deepstack_visual_indexes=[8, 16, 24]),
        audio=dict(d_model=1280, encoder_layers=32, encoder_attention_heads=20, encoder_ffn_dim=5120, output_dim=2048,
                   downsample_hidden_size=480)),
}
#: the Qwen3-Omni LoRA config's settings (configs/qwen3-omni-30b-a3b-grpo-dfew-lora.yaml)
QWEN3_LORA = dict(lora_r=64, lora_alpha=128, lora_dropout=0.05, lora_target_modules=None, lora_modules_to_save=None)


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


def lora_rule_bytes(total: int, trainable: int) -> int:
    """LoRA: the frozen base in fp32 plus weight, gradient and two AdamW moments of what trains;
    no reference copy (the reference is the policy with its adapters disabled)."""
    return 4 * total + 16 * trainable


def paper_qwen3_lora(name: str) -> tuple[int, int, int, int]:
    """(all parameters, active per token, trainable with LoRA, of those the adapters) of the
    meta-device MoE thinker after ``set_trainable_parts(PARTS)`` and ``apply_lora`` with
    :data:`QWEN3_LORA` (the default targets: in transformers 5's fused-expert layout, the
    attention projections; the experts stay frozen)."""
    from types import SimpleNamespace

    from transformers import Qwen3OmniMoeThinkerConfig, Qwen3OmniMoeThinkerForConditionalGeneration

    from r1omni_fast.model.lora import apply_lora
    from r1omni_fast.model.qwen3_omni.policy import Qwen3OmniThinkerPolicy

    size = QWEN3_SIZES[name]
    config = Qwen3OmniMoeThinkerConfig(text_config=size["text"], vision_config=size["vision"], audio_config=size["audio"],
                                       position_id_per_seconds=13)
    with torch.device("meta"):
        policy = Qwen3OmniThinkerPolicy(Qwen3OmniMoeThinkerForConditionalGeneration(config))
        policy.set_trainable_parts(PARTS)
        apply_lora(policy, SimpleNamespace(**QWEN3_LORA))
    unique = {id(p): (n, p) for n, p in policy.named_parameters()}
    total = sum(p.numel() for n, p in unique.values() if "lora_" not in n and ".modules_to_save." not in n)
    text = config.text_config
    experts = sum(p.numel() for n, p in unique.values() if ".experts." in n)
    active = total - experts + experts * text.num_experts_per_tok // text.num_experts
    trainable = sum(p.numel() for _, p in unique.values() if p.requires_grad)
    adapters = sum(p.numel() for n, p in unique.values() if p.requires_grad and "lora_" in n)
    return total, active, trainable, adapters


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
    for name in QWEN3_SIZES:
        total, active, trainable, adapters = paper_qwen3_lora(name)
        print(f"{name} thinker (on paper): {total / 1e9:.2f} B params ({active / 1e9:.2f} B active per token); "
              f"LoRA r{QWEN3_LORA['lora_r']}: {trainable / 1e6:.1f} M trainable ({adapters / 1e6:.1f} M adapters + "
              f"{(trainable - adapters) / 1e6:.1f} M mergers and audio projection): "
              f"{lora_rule_bytes(total, trainable) / GIB:.1f} GiB of weights + gradients + AdamW, before activations "
              f"(frozen fp32 weights {4 * total / GIB:.1f} GiB; bf16 weights would be {2 * total / GIB:.1f} GiB)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory():
        main()
