"""TRL's loss types cispo, sapo, vespo and luspo and top_entropy_quantile in a GRPO run: the
metrics TRL logs for each (and only those), TRL's warnings, and the trainer's micro-batch loss
against the kernel with TRL's entropy mask written out. The formulas themselves are checked
against fp64 oracles in test_kernels.py and test_grpo_normalisation.py."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from r1omni_fast.train.metrics_log import read_jsonl

from _train_fixtures import clip_loader, grpo_fields, grpo_trainer, shared_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def _run(model_dir, data, out, **over):
    from r1omni_fast.config import GRPOConfig
    from r1omni_fast.train.grpo import GRPOTrainer

    fields = grpo_fields(model_dir, data, out, **over)
    fields.pop("stage")
    trainer = GRPOTrainer(GRPOConfig(**fields), loader=clip_loader(), progress=False)
    trainer.train()
    return trainer, read_jsonl(out / "metrics.jsonl")


CLIP_KEYS = {"clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean", "clip_ratio/low_min",
             "clip_ratio/high_max"}


@pytest.mark.parametrize("loss_type,over,own_keys", [
    ("cispo", dict(epsilon_high=5.0, num_iterations=2), {"cispo_clip_ratio"}),
    ("sapo", dict(top_entropy_quantile=0.5), set()),
    ("vespo", dict(num_iterations=2), {"vespo/phi_seq_mean"}),
    ("luspo", dict(importance_sampling_level="sequence", beta=0.0), CLIP_KEYS),
])
def test_loss_types_run_and_log_trls_metrics(assets, tmp_path, loss_type, over, own_keys):
    model_dir, data = assets
    trainer, records = _run(model_dir, data, tmp_path / loss_type, loss_type=loss_type, **over)
    assert len(records) == 2
    for r in records:
        assert math.isfinite(r["loss"]) and 0.0 < r["entropy"] <= math.log(trainer.model.llm.config.vocab_size)
        present = {k for k in CLIP_KEYS | {"cispo_clip_ratio", "vespo/phi_seq_mean"} if k in r}
        assert present == own_keys
    if loss_type == "vespo":  # step 1 on-policy: phi(1) = 1
        assert records[0]["vespo/phi_seq_mean"] == pytest.approx(1.0)
    if loss_type == "cispo":
        assert records[0]["cispo_clip_ratio"] == 0.0  # ratio 1 < 5


def test_cispo_and_vespo_warn_as_trl(assets, tmp_path, caplog):
    model_dir, data = assets
    with caplog.at_level(logging.WARNING, logger="r1omni_fast.train.grpo"):
        grpo_trainer(model_dir, data, tmp_path / "a", importance_sampling_level="sequence", loss_type="cispo")
        grpo_trainer(model_dir, data, tmp_path / "b", importance_sampling_level="sequence", loss_type="vespo")
    messages = [r.getMessage() for r in caplog.records]
    assert any("loss_type: cispo" in m and "GSPO" in m for m in messages)
    assert any("vespo" in m and "importance_sampling_level: token" in m for m in messages)


@pytest.mark.parametrize("quantile", [0.2, 0.0])
def test_micro_batch_loss_masks_the_policy_term_by_trls_entropy_quantile(assets, tmp_path, quantile):
    """The trainer's loss on a real rollout equals grpo_loss with TRL's entropy mask written out
    (the threshold: torch.quantile of the completion tokens' categorical entropies, fp64 rounded to fp32)."""
    from r1omni_fast.kernels import grpo_loss
    from r1omni_fast.train.stream import make_stream
    from r1omni_fast.train.grpo.loss import micro_batch_loss

    model_dir, data = assets
    trainer = grpo_trainer(model_dir, data, tmp_path / "run", loss_type="dapo", top_entropy_quantile=quantile,
                           temperature=0.8)
    trainer.stream = make_stream(trainer.cfg, trainer.train_data, trainer.collate, None, trainer.dist)
    rollout = trainer.make_rollout(trainer.stream.next())
    rollout.num_items = float(rollout.mask.sum())
    # the tiny model's rewards tie within groups: give the rows advantages of both signs
    rollout.advantages = torch.linspace(-1.0, 1.3, rollout.mask.shape[0])
    with torch.no_grad():
        logits = trainer.model.completion_logits(rollout.prompts, rollout.completion_ids, rollout.mask,
                                                 trainer.cfg.num_generations)
    m = rollout.mask
    ent = torch.distributions.Categorical(logits=logits.double() / 0.8).entropy()
    # TRL compares the float32 entropies with their own quantile (so quantile 0 keeps the maximum)
    ent32 = ent.float()
    threshold = torch.quantile(ent32[m], 1 - quantile)
    keep = ((ent32 * m) >= threshold) & m
    assert 0 < int(keep.sum()) < int(m.sum())

    def gradient(loss_fn):
        leaf = logits.clone().requires_grad_(True)
        loss, metrics = loss_fn(leaf)
        loss.backward()
        return leaf.grad, metrics

    ours, metrics = gradient(lambda x: micro_batch_loss(x, rollout, trainer.cfg, trainer.dist))
    cfg = trainer.cfg
    args = dict(mask=m, ref_logp=rollout.ref_logp, num_items_in_batch=rollout.num_items, beta=cfg.beta,
                eps_low=cfg.epsilon, eps_high=cfg.epsilon if cfg.epsilon_high is None else cfg.epsilon_high,
                temperature=0.8, loss_type="dapo", max_completion_length=cfg.max_completion_length)
    want, _ = gradient(lambda x: grpo_loss(x, rollout.completion_ids, rollout.advantages, policy_mask=keep, **args))
    plain, _ = gradient(lambda x: grpo_loss(x, rollout.completion_ids, rollout.advantages, **args))
    torch.testing.assert_close(ours, want, rtol=1e-6, atol=1e-9)
    assert not torch.allclose(want, plain, rtol=1e-3, atol=1e-6)
    # the entropy metric still covers every completion token
    assert float(metrics["entropy"]) == pytest.approx(float((ent * m).sum() / m.sum()), rel=1e-5)
    trainer.stream.close()


def test_loss_spec_from_config_carries_every_loss_knob_under_trls_names():
    """LossSpec.from_config reads each TRL GRPOConfig loss field into its LossSpec field (changed one at a time)."""
    import dataclasses

    from r1omni_fast.config import GRPOConfig
    from r1omni_fast.kernels.objective import LossSpec

    names = {"loss_type": ("loss_type", "dr_grpo"), "importance_sampling_level": ("importance_sampling_level", "sequence"),
             "beta": ("beta", 0.5), "epsilon": ("eps_low", 0.3), "epsilon_high": ("eps_high", 0.28),
             "delta": ("delta", 2.0), "temperature": ("temperature", 0.7),
             "max_completion_length": ("max_completion_length", 33),
             "sapo_temperature_pos": ("sapo_temperature_pos", 1.5), "sapo_temperature_neg": ("sapo_temperature_neg", 2.5),
             "vespo_k_pos": ("vespo_k_pos", 4.0), "vespo_lambda_pos": ("vespo_lambda_pos", 5.0),
             "vespo_k_neg": ("vespo_k_neg", 6.0), "vespo_lambda_neg": ("vespo_lambda_neg", 7.0),
             "use_bias_correction_kl": ("bias_correction_kl", True)}
    assert {v[0] for v in names.values()} == {f.name for f in dataclasses.fields(LossSpec)}
    base = LossSpec.from_config(GRPOConfig())
    assert base.eps_high == base.eps_low == GRPOConfig().epsilon  # epsilon_high None = epsilon
    for field, (spec_field, value) in names.items():
        spec = LossSpec.from_config(dataclasses.replace(GRPOConfig(), **{field: value}))
        assert getattr(spec, spec_field) == value, field
        changed = {f.name for f in dataclasses.fields(LossSpec) if getattr(spec, f.name) != getattr(base, f.name)}
        assert changed == {spec_field} or (field == "epsilon" and changed == {"eps_low", "eps_high"}), field
