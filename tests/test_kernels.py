"""GRPO loss and selective log-probs: Triton kernels (under TRITON_INTERPRET=1 on CPU) and the
PyTorch references against an independent fp64 oracle written from TRL's GRPOTrainer formulas.

Tolerances (stated per dtype). The forward reads the logits as given and accumulates in fp32, so
loss, metrics and log-probs match the fp64 oracle on the *same* rounded logits to fp32 accuracy
for every dtype. The gradient is stored in the logits' dtype, so its tolerance is the dtype's
rounding, relative to the largest gradient entry: fp32 1e-5, fp16 2e-3, bf16 1.6e-2.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from r1omni_fast.kernels import GRPOLoss, backend, grpo_loss, selective_logprobs
from r1omni_fast.kernels import reference

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
GRAD_RTOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1.6e-2}
FWD_RTOL = 2e-5
BACKENDS = ["triton", "reference"]


@pytest.fixture(autouse=True)
def _small_reference_chunks(monkeypatch):
    # Walk several vocabulary chunks in the reference even at test vocab sizes.
    monkeypatch.setattr(reference, "VOCAB_CHUNK", 64)


# ----------------------------------------------------------------------------------------------
# The oracle: dense fp64 log_softmax + TRL's compute_loss, differentiated by autograd.
# ----------------------------------------------------------------------------------------------


def oracle(logits, ids, adv, mask, old, ref, *, beta, eps_low, eps_high, delta, temperature, loss_type, level,
           max_completion_length=None, num_items_in_batch=None, entropy_mask=None, sapo_pos=1.0, sapo_neg=1.05,
           vespo=(2.0, 3.0, 3.0, 2.0), bias_correction_kl=False):  # fmt: skip
    x = logits.detach().to(torch.float64).requires_grad_(True)
    m = mask.to(torch.float64)
    B, L = ids.shape
    logp = torch.log_softmax(x / temperature, dim=-1).gather(-1, ids.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    old_ = logp.detach() if old is None else old.to(torch.float64)
    log_ratio = logp - old_
    if level == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * m).sum(-1) / m.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_w)
    a = adv.to(torch.float64).reshape(-1, 1)
    extra = {}
    if loss_type == "cispo":  # TRL: clamp(coef_1, max=epsilon_high).detach() * A * logp
        per_token = -torch.clamp(coef_1, max=eps_high).detach() * a * logp
    elif loss_type == "sapo":  # TRL: sigmoid(tau (coef_1 - 1)) * 4 / tau, tau by the advantage's sign
        tau = torch.where(a > 0, sapo_pos, sapo_neg)
        per_token = -torch.sigmoid(tau * (coef_1 - 1)) * 4 / tau * a
    elif loss_type == "vespo":  # TRL's get_gamma_weights, detached
        k_pos, lam_pos, k_neg, lam_neg = vespo
        with torch.no_grad():
            seq = torch.sum(torch.clamp(log_ratio, -20.0, 20.0) * m, dim=-1, keepdim=True)
            log_w_seq = torch.clamp(seq, math.log(1e-8), 20.0)
            k = torch.where(a >= 0, k_pos, k_neg)
            lam = torch.where(a >= 0, lam_pos, lam_neg).clamp(min=1e-4)
            phi = torch.exp(lam + k * log_w_seq - lam * torch.exp(log_w_seq)).nan_to_num(0.0, 0.0, 0.0)
        per_token = -phi * a * logp
        extra["vespo/phi_seq_mean"] = phi.mean()
    else:
        coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
        loss1 = (torch.clamp(coef_1, max=delta) if delta is not None else coef_1) * a
        per_token = -torch.min(loss1, coef_2 * a)
    if entropy_mask is not None:
        per_token = per_token * entropy_mask
    kl = None
    if ref is not None:
        d = ref.to(torch.float64) - logp
        kl = torch.exp(d) - d - 1
        if bias_correction_kl:  # TRL's use_bias_correction_kl: per_token_kl * coef_1
            kl = kl * coef_1
        if beta != 0.0:
            per_token = per_token + beta * kl
    if loss_type in ("grpo", "sapo"):
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif loss_type == "bnpo":
        loss = (per_token * m).sum() / m.sum().clamp(min=1.0)
    elif loss_type == "dr_grpo":
        loss = (per_token * m).sum() / (B * (max_completion_length or L))
    elif loss_type == "luspo":
        loss = (per_token * m.sum(1, keepdim=True)).mean()
    else:  # dapo, cispo, vespo
        n = m.sum() if num_items_in_batch is None else torch.tensor(float(num_items_in_batch), dtype=torch.float64)
        loss = (per_token * m).sum() / n.clamp(min=1.0)
    loss.backward()

    def batch_mean(flag):
        if flag.shape[1] == 1:
            return flag.double().mean()
        return (flag.double() * m).sum() / m.sum().clamp(min=1.0)

    metrics = {"logp": (logp * (m != 0)).detach()}
    if loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "luspo"):
        low = (coef_1 < 1 - eps_low) & (a < 0)
        high = (coef_1 > 1 + eps_high) & (a > 0)
        metrics["clip_ratio/low_mean"] = batch_mean(low)
        metrics["clip_ratio/high_mean"] = batch_mean(high)
        metrics["clip_ratio/region_mean"] = batch_mean(low | high)
    elif loss_type == "cispo":
        metrics["cispo_clip_ratio"] = batch_mean((coef_1 > eps_high) & (a > 0))
    metrics.update(extra)
    if kl is not None:
        metrics["kl"] = (kl * m).sum().detach() / m.sum().clamp(min=1.0)
    return loss.detach(), metrics, x.grad


def dense_entropy(logits, temperature):
    """The categorical entropy of softmax(logits / T) in fp64, from the definition."""
    logp = torch.log_softmax(logits.double() / temperature, -1)
    return -(logp.exp() * logp).sum(-1)


def make_case(B=4, L=6, V=160, dtype=torch.float32, scale=2.0, seed=0, ragged=True, temperature=1.0):
    """Logits, ids (-100 where masked), ragged mask with a fully masked sequence, advantages with an
    exact 0, and old/ref log-probs near the truth so that both clip sides trigger."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(B, L, V, generator=g) * scale).to(dtype)
    ids = torch.randint(0, V, (B, L), generator=g)
    mask = torch.ones(B, L)
    if ragged and B > 1:
        lengths = torch.randint(1, L + 1, (B,), generator=g)
        lengths[-1] = 0  # a fully masked sequence
        lengths[1 : min(3, B - 1)] = L  # full sequences of either advantage sign
        mask = (torch.arange(L)[None, :] < lengths[:, None]).float()
    ids = torch.where(mask != 0, ids, torch.full_like(ids, -100))
    adv = torch.randn(B, generator=g).abs() * torch.tensor([(-1.0) ** i for i in range(B)])
    adv[0] = 0.0  # a zero-variance group; then alternating signs so both clip sides can trigger
    true = torch.log_softmax(logits.double() / temperature, -1).gather(-1, ids.clamp(min=0)[..., None])[..., 0]
    old = (true + 0.5 * torch.randn(B, L, generator=g, dtype=torch.float64)).float()
    ref = (true + 0.25 * torch.randn(B, L, generator=g, dtype=torch.float64)).float()
    return logits, ids, adv, mask, old, ref


def run(backend_name, logits, ids, adv, mask, old, ref, *, inplace_grad=True, grad_scale=1.0, **kw):
    """Our loss through autograd; returns (loss, metrics, d loss / d logits in the logits' dtype)."""
    leaf = logits.clone().requires_grad_(True)
    with backend(backend_name):
        loss, metrics = grpo_loss(leaf * 1, ids, adv, mask=mask, old_logp=old, ref_logp=ref,
                                  inplace_grad=inplace_grad, **kw)  # fmt: skip
    (loss * grad_scale).backward() if grad_scale != 1.0 else loss.backward()
    return loss.detach(), metrics, leaf.grad


def assert_matches(ours, want, dtype, mask, fwd_rtol=FWD_RTOL, logp_atol=None, grad_rtol=None):
    loss, metrics, grad = ours
    want_loss, want_metrics, want_grad = want
    assert torch.isfinite(loss) and torch.isfinite(grad.float()).all()
    assert abs(loss.double() - want_loss) <= fwd_rtol * (1 + abs(want_loss)), (float(loss), float(want_loss))
    assert set(metrics) == set(want_metrics)
    for key in set(want_metrics) - {"logp", "kl"}:
        assert float(metrics[key]) == pytest.approx(float(want_metrics[key]), rel=FWD_RTOL, abs=1e-6), key
    if "kl" in want_metrics:
        assert abs(metrics["kl"].double() - want_metrics["kl"]) <= fwd_rtol * (1 + abs(want_metrics["kl"]))
    logp_err = (metrics["logp"].double() - want_metrics["logp"]).abs()
    tol = logp_atol if logp_atol is not None else fwd_rtol * (1 + want_metrics["logp"].abs())
    assert (logp_err <= tol).all(), float(logp_err.max())
    assert not metrics["logp"].requires_grad
    scale = want_grad.abs().max().clamp(min=1e-30)
    err = (grad.double() - want_grad).abs().max() / scale
    tol = max(GRAD_RTOL[dtype], grad_rtol or 0.0)
    assert err <= tol, f"grad error {float(err):.3g} relative to max |grad| {float(scale):.3g}"
    assert (grad[mask == 0] == 0).all(), "masked positions must get an exactly zero gradient"


# ----------------------------------------------------------------------------------------------
# The full matrix: loss type x importance level x temperature x dtype x backend
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_matches_oracle(backend_name, dtype_name, temperature, level, loss_type):
    dtype = DTYPES[dtype_name]
    seed = ["grpo", "bnpo", "dr_grpo", "dapo"].index(loss_type)
    logits, ids, adv, mask, old, ref = make_case(dtype=dtype, temperature=temperature, seed=seed)
    kw = dict(beta=0.04, eps_low=0.2, eps_high=0.28, delta=None, temperature=temperature, loss_type=loss_type)
    ours = run(backend_name, logits, ids, adv, mask, old, ref, importance_sampling_level=level, **kw)
    want = oracle(logits, ids, adv, mask, old, ref, level=level, **kw)
    assert_matches(ours, want, dtype, mask)
    # the case really exercises both clip sides at token level
    if level == "token":
        assert float(want[1]["clip_ratio/low_mean"]) > 0 and float(want[1]["clip_ratio/high_mean"]) > 0


TRL_LOSS_CASES = [("cispo", "token"), ("cispo", "sequence"), ("sapo", "token"), ("sapo", "sequence"),
                  ("vespo", "token"), ("vespo", "sequence"), ("luspo", "sequence")]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("loss_type,level", TRL_LOSS_CASES)
def test_cispo_sapo_vespo_luspo_match_oracle(backend_name, dtype_name, loss_type, level):
    dtype = DTYPES[dtype_name]
    temperature = 0.7 if dtype_name == "fp32" else 1.0
    logits, ids, adv, mask, old, ref = make_case(dtype=dtype, temperature=temperature, seed=30)
    # cispo: eps_high caps the ratio itself (TRL; ScaleRL's 5.0 would not clip this case)
    kw = dict(beta=0.0 if loss_type == "luspo" else 0.04, eps_low=0.2, eps_high=1.2 if loss_type == "cispo" else 0.28,
              delta=None, temperature=temperature, loss_type=loss_type)  # fmt: skip
    params = dict(sapo_temperature_pos=1.3, sapo_temperature_neg=0.8, vespo_k_pos=1.5, vespo_lambda_pos=2.5,
                  vespo_k_neg=2.5, vespo_lambda_neg=1.5)  # fmt: skip
    ours = run(backend_name, logits, ids, adv, mask, old, ref, importance_sampling_level=level, **kw, **params)
    want = oracle(logits, ids, adv, mask, old, ref, level=level, sapo_pos=1.3, sapo_neg=0.8,
                  vespo=(1.5, 2.5, 2.5, 1.5), **kw)  # fmt: skip
    assert_matches(ours, want, dtype, mask)
    if loss_type == "cispo" and level == "token":
        assert 0 < float(want[1]["cispo_clip_ratio"]) < 1, "the case must clip some tokens and not others"
    if loss_type == "vespo":
        on_policy = oracle(logits, ids, adv, mask, None, ref, level=level, vespo=(1.5, 2.5, 2.5, 1.5), **kw)
        assert float(on_policy[1]["vespo/phi_seq_mean"]) == 1.0
        assert abs(float(want[0]) - float(on_policy[0])) > 1e-2, "off-policy: phi must differ from 1"


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "cispo", "sapo", "vespo"])
def test_policy_mask_drops_the_policy_term_only(backend_name, level, loss_type):
    """TRL's top_entropy_quantile multiplies the policy term by the entropy mask; the KL term and
    every normaliser keep the whole completion mask."""
    logits, ids, adv, mask, old, ref = make_case(seed=31, temperature=0.7)
    keep = (torch.rand(mask.shape, generator=torch.Generator().manual_seed(32)) < 0.5).float() * mask
    kw = dict(beta=0.04, eps_low=0.2, eps_high=1.3 if loss_type == "cispo" else 0.2, delta=None, temperature=0.7,
              loss_type=loss_type)  # fmt: skip
    ours = run(backend_name, logits, ids, adv, mask, old, ref, importance_sampling_level=level, policy_mask=keep,
               **kw)  # fmt: skip
    want = oracle(logits, ids, adv, mask, old, ref, level=level, entropy_mask=keep, **kw)
    assert_matches(ours, want, torch.float32, mask)
    unmasked = oracle(logits, ids, adv, mask, old, ref, level=level, **kw)
    assert abs(float(want[0]) - float(unmasked[0])) > 1e-4, "the mask must change the loss"


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
def test_return_entropy_is_the_categorical_entropy_from_the_same_pass(backend_name, level, dtype_name):
    dtype = DTYPES[dtype_name]
    logits, ids, adv, mask, old, ref = make_case(dtype=dtype, seed=33, temperature=0.7)
    logits[0, 0] *= 40  # a peaked row: entropy ~ 0, where lse - sum p z would cancel
    true = torch.log_softmax(logits[0, 0].double() / 0.7, -1)[ids[0, 0]]
    old[0, 0], ref[0, 0] = true, true  # keep the row's ratio and KL finite
    kw = dict(beta=0.04, eps_low=0.2, eps_high=0.2, delta=None, temperature=0.7, loss_type="grpo",
              importance_sampling_level=level)  # fmt: skip
    loss, metrics, grad = run(backend_name, logits, ids, adv, mask, old, ref, return_entropy=True, **kw)
    want = dense_entropy(logits, 0.7) * mask
    got = metrics["entropy"]
    assert got.dtype == torch.float32 and got.shape == mask.shape and not got.requires_grad
    assert ((got.double() - want).abs() <= 2e-6 * (1 + want)).all(), float((got.double() - want).abs().max())
    assert float(want[0, 0]) < 1e-3 and (got[mask == 0] == 0).all()
    plain_loss, plain_metrics, plain_grad = run(backend_name, logits, ids, adv, mask, old, ref, **kw)
    assert "entropy" not in plain_metrics
    assert torch.equal(loss, plain_loss) and torch.equal(grad, plain_grad), "asking for the entropy changes nothing"


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "cispo", "sapo"])
def test_bias_corrected_kl_matches_oracle(backend_name, level, loss_type):
    logits, ids, adv, mask, old, ref = make_case(seed=35, temperature=0.7)
    kw = dict(beta=0.3, eps_low=0.2, eps_high=1.2 if loss_type == "cispo" else 0.2, delta=None, temperature=0.7,
              loss_type=loss_type)  # fmt: skip
    ours = run(backend_name, logits, ids, adv, mask, old, ref, importance_sampling_level=level,
               bias_correction_kl=True, **kw)  # fmt: skip
    want = oracle(logits, ids, adv, mask, old, ref, level=level, bias_correction_kl=True, **kw)
    assert_matches(ours, want, torch.float32, mask)
    plain = oracle(logits, ids, adv, mask, old, ref, level=level, **kw)
    assert abs(float(want[1]["kl"]) - float(plain[1]["kl"])) > 1e-4


def test_luspo_needs_sequence_level_and_beta_0():
    logits, ids, adv, mask, old, ref = make_case(seed=34)
    with pytest.raises(ValueError, match="luspo.*sequence"):
        grpo_loss(logits, ids, adv, mask=mask, beta=0.0, loss_type="luspo")
    with pytest.raises(ValueError, match="luspo.*beta"):
        grpo_loss(logits, ids, adv, mask=mask, ref_logp=ref, beta=0.04, loss_type="luspo",
                  importance_sampling_level="sequence")  # fmt: skip
    with pytest.raises(ValueError, match="sapo_temperature_neg"):
        grpo_loss(logits, ids, adv, mask=mask, beta=0.0, loss_type="sapo", sapo_temperature_neg=0.0)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_delta_on_policy_and_normaliser_arguments(backend_name, level):
    logits, ids, adv, mask, old, ref = make_case(seed=3, temperature=0.7)
    ratio = torch.exp(oracle(logits, ids, adv, mask, old, ref, beta=0.0, eps_low=0.2, eps_high=0.2, delta=None,
                             temperature=0.7, loss_type="grpo", level="token")[1]["logp"] - old)  # fmt: skip
    assert ((ratio > 1.25) & (mask != 0) & (adv[:, None] < 0)).any(), "the case must reach the delta cap"
    cases = [
        dict(loss_type="dapo", delta=1.25, num_items_in_batch=37),
        dict(loss_type="dr_grpo", delta=1.1, max_completion_length=11),
        dict(loss_type="grpo", delta=None),
    ]
    for extra in cases:
        kw = dict(beta=0.1, eps_low=0.2, eps_high=0.2, temperature=0.7, **extra)
        ours = run(backend_name, logits, ids, adv, mask, old, ref, importance_sampling_level=level, **kw)
        assert_matches(ours, oracle(logits, ids, adv, mask, old, ref, level=level, **kw), torch.float32, mask)
    # on-policy (old_logp = logp.detach(): ratio exactly 1, both branches of the min tie), no KL term
    kw = dict(beta=0.0, eps_low=0.2, eps_high=0.2, delta=None, temperature=1.0, loss_type="bnpo")
    ours = run(backend_name, logits, ids, adv, mask, None, None, importance_sampling_level=level, **kw)
    want = oracle(logits, ids, adv, mask, None, None, level=level, **kw)
    assert_matches(ours, want, torch.float32, mask)
    assert "kl" not in ours[1]


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_all_masked_batch_gives_zeros_not_nan(backend_name, level):
    logits, ids, adv, mask, old, ref = make_case(seed=4)
    mask = torch.zeros_like(mask)
    ids = torch.full_like(ids, -100)
    loss, metrics, grad = run(backend_name, logits, ids, adv, mask, old, ref, importance_sampling_level=level)
    assert float(loss) == 0.0
    assert (grad == 0).all()
    assert all(torch.isfinite(v).all() for v in metrics.values())
    assert float(metrics["kl"]) == 0.0 and float(metrics["clip_ratio/region_mean"]) == 0.0


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_zero_advantage_sequences_get_only_the_kl_gradient(backend_name, level):
    logits, ids, _, mask, old, ref = make_case(seed=5, ragged=False)
    adv = torch.tensor([0.0, 1.5, 0.0, -0.5])
    # on-policy (ratio 1, never clipped) and beta = 0: only the zero-advantage sequences get no gradient
    _, _, grad = run(backend_name, logits, ids, adv, mask, None, ref, beta=0.0, importance_sampling_level=level)
    assert (grad[0] == 0).all() and (grad[2] == 0).all()
    assert grad[1].abs().max() > 0 and grad[3].abs().max() > 0
    kw = dict(beta=0.04, eps_low=0.2, eps_high=0.2, delta=None, temperature=1.0, loss_type="grpo")
    ours = run(backend_name, logits, ids, adv, mask, old, ref, importance_sampling_level=level, **kw)
    assert_matches(ours, oracle(logits, ids, adv, mask, old, ref, level=level, **kw), torch.float32, mask)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype_name", ["fp32", "bf16"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_large_logits(backend_name, dtype_name, temperature):
    # |x| ~ 1e4: fp32 holds x / T and the logsumexp (~2e4) only to ~1e-3 absolute, which moves
    # the ratio and every probability by ~1e-3 relative: the tolerances are those of fp32 at this
    # magnitude (logp 1e-2 absolute, loss 1e-2 relative, gradient 5e-3 of its maximum).
    dtype = DTYPES[dtype_name]
    logits, ids, adv, mask, _, _ = make_case(dtype=dtype, scale=1e4, seed=6, temperature=temperature)
    true = torch.log_softmax(logits.double() / temperature, -1).gather(-1, ids.clamp(min=0)[..., None])[..., 0]
    g = torch.Generator().manual_seed(7)
    old = (true + 0.3 * torch.randn(true.shape, generator=g, dtype=torch.float64)).float()
    ref = (true + 0.2 * torch.randn(true.shape, generator=g, dtype=torch.float64)).float()
    for level in ("token", "sequence"):
        kw = dict(beta=0.04, eps_low=0.2, eps_high=0.2, delta=None, temperature=temperature, loss_type="grpo")
        ours = run(backend_name, logits, ids, adv, mask, old, ref, importance_sampling_level=level, **kw)
        want = oracle(logits, ids, adv, mask, old, ref, level=level, **kw)
        assert_matches(ours, want, dtype, mask, fwd_rtol=1e-2, logp_atol=1e-2, grad_rtol=5e-3)


@pytest.mark.parametrize("backend_name", BACKENDS)
def test_ties(backend_name):
    # Integer logits from {0, 1, 2}: many exact ties, including for the row maximum; on-policy
    # ratios tie the two branches of the min exactly.
    g = torch.Generator().manual_seed(8)
    logits = torch.randint(0, 3, (2, 5, 96), generator=g).float()
    ids = torch.randint(0, 96, (2, 5), generator=g)
    mask = torch.ones(2, 5)
    adv = torch.tensor([0.7, -1.2])
    for level in ("token", "sequence"):
        kw = dict(beta=0.0, eps_low=0.2, eps_high=0.2, delta=None, temperature=1.0, loss_type="grpo")
        ours = run(backend_name, logits, ids, adv, mask, None, None, importance_sampling_level=level, **kw)
        assert_matches(ours, oracle(logits, ids, adv, mask, None, None, level=level, **kw), torch.float32, mask)


# ----------------------------------------------------------------------------------------------
# In-place gradient, incoming-gradient scaling, strides
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_inplace_grad_and_grad_output_scaling(level):
    logits, ids, adv, mask, old, ref = make_case(seed=9, temperature=0.7)
    kw = dict(beta=0.04, eps_low=0.2, eps_high=0.2, delta=None, temperature=0.7, loss_type="grpo")
    want = oracle(logits, ids, adv, mask, old, ref, level=level, **kw)
    for inplace in (True, False):
        loss, _, grad = run("triton", logits, ids, adv, mask, old, ref, inplace_grad=inplace, grad_scale=-2.5,
                            importance_sampling_level=level, **kw)  # fmt: skip
        err = (grad.double() + 2.5 * want[2]).abs().max() / want[2].abs().max()
        assert err <= 1e-5
    # inplace_grad=True: the logits buffer itself ends up holding the gradient
    buf = logits.clone().requires_grad_(True)
    with backend("triton"):
        loss, _ = grpo_loss(buf, ids, adv, mask=mask, old_logp=old, ref_logp=ref, importance_sampling_level=level, **kw)
    loss.backward()
    assert torch.equal(buf.detach(), buf.grad)
    # inplace_grad=False leaves the logits untouched
    buf = logits.clone().requires_grad_(True)
    with backend("triton"):
        loss, _ = grpo_loss(buf, ids, adv, mask=mask, old_logp=old, ref_logp=ref, importance_sampling_level=level,
                            inplace_grad=False, **kw)  # fmt: skip
    loss.backward()
    assert torch.equal(buf.detach(), logits)


def test_inplace_grad_makes_other_users_of_the_logits_fail_loudly():
    logits, ids, adv, mask, old, ref = make_case(seed=10)
    leaf = logits.clone().requires_grad_(True)
    lg = leaf * 1
    other = (lg**2).sum()  # pow saves lg for its backward
    with backend("triton"):
        loss, _ = grpo_loss(lg, ids, adv, mask=mask, old_logp=old, ref_logp=ref)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()


def test_token_level_backward_twice_is_refused():
    logits, ids, adv, mask, old, ref = make_case(seed=11)
    leaf = logits.clone().requires_grad_(True)
    with backend("triton"):
        loss, _ = grpo_loss(leaf * 1, ids, adv, mask=mask, old_logp=old, ref_logp=ref)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backpropagated once"):
        loss.backward()


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_strided_logits_view(level):
    # The caller drops the last position of (B, L + 1, V) logits: a non-contiguous view.
    full, ids, adv, mask, old, ref = make_case(L=7, seed=12)
    ids, mask, old, ref = ids[:, :6], mask[:, :6], old[:, :6], ref[:, :6]
    kw = dict(beta=0.04, eps_low=0.2, eps_high=0.2, delta=None, temperature=1.0, loss_type="bnpo")
    leaf = full.clone().requires_grad_(True)
    with backend("triton"):
        loss, metrics = grpo_loss(leaf[:, :-1], ids, adv, mask=mask, old_logp=old, ref_logp=ref,
                                  importance_sampling_level=level, **kw)  # fmt: skip
    loss.backward()
    want = oracle(full[:, :-1], ids, adv, mask, old, ref, level=level, **kw)
    assert_matches((loss.detach(), metrics, leaf.grad[:, :-1]), want, torch.float32, mask)
    assert (leaf.grad[:, -1] == 0).all()


def test_no_grad_forward_leaves_logits_intact():
    logits, ids, adv, mask, old, ref = make_case(seed=13)
    buf = logits.clone()
    with backend("triton"), torch.no_grad():
        loss, _ = grpo_loss(buf, ids, adv, mask=mask, old_logp=old, ref_logp=ref)
    kw = dict(beta=0.04, eps_low=0.2, eps_high=0.2, delta=None, temperature=1.0, loss_type="grpo")
    assert float(loss) == pytest.approx(float(oracle(logits, ids, adv, mask, old, ref, level="token", **kw)[0]),
                                        rel=FWD_RTOL)  # fmt: skip
    assert torch.equal(buf, logits)


def test_module_wrapper_matches_function():
    logits, ids, adv, mask, old, ref = make_case(seed=14, temperature=0.7)
    module = GRPOLoss(beta=0.1, loss_type="dapo", importance_sampling_level="sequence", temperature=0.7)
    assert "dapo" in repr(module)
    got, _ = module(logits.clone(), ids, adv, mask=mask, old_logp=old, ref_logp=ref)
    want, _ = grpo_loss(logits.clone(), ids, adv, mask=mask, old_logp=old, ref_logp=ref, beta=0.1,
                        loss_type="dapo", importance_sampling_level="sequence", temperature=0.7)  # fmt: skip
    assert float(got) == float(want)


# ----------------------------------------------------------------------------------------------
# Properties, gradcheck, selective log-probs, errors
# ----------------------------------------------------------------------------------------------


@settings(max_examples=8)
@given(
    B=st.integers(1, 3),
    L=st.integers(1, 5),
    V=st.integers(2, 300),
    level=st.sampled_from(["token", "sequence"]),
    loss_type=st.sampled_from(["grpo", "bnpo", "dr_grpo", "dapo"]),
    seed=st.integers(0, 2**16),
)
def test_shapes_property(B, L, V, level, loss_type, seed):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, V, generator=g) * 3
    ids = torch.randint(0, V, (B, L), generator=g)
    mask = (torch.rand(B, L, generator=g) < 0.7).float()
    adv = torch.randn(B, generator=g)
    old = torch.log_softmax(logits, -1).gather(-1, ids[..., None])[..., 0] + 0.3 * torch.randn(B, L, generator=g)
    ref = old + 0.2 * torch.randn(B, L, generator=g)
    kw = dict(beta=0.04, eps_low=0.2, eps_high=0.2, delta=None, temperature=0.9, loss_type=loss_type)
    ours = run("triton", logits, ids, adv, mask, old, ref, importance_sampling_level=level, **kw)
    assert_matches(ours, oracle(logits, ids, adv, mask, old, ref, level=level, **kw), torch.float32, mask)


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "sapo"])
def test_reference_gradcheck(level, loss_type, monkeypatch):
    monkeypatch.setattr(reference, "VOCAB_CHUNK", 3)
    g = torch.Generator().manual_seed(15)
    x = torch.randn(2, 3, 7, generator=g, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 7, (2, 3), generator=g)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]], dtype=torch.float64)
    adv = torch.tensor([0.8, -0.5], dtype=torch.float64)
    with torch.no_grad():
        true = torch.log_softmax(x, -1).gather(-1, ids[..., None])[..., 0]
    old = true + 0.05  # ratios ~0.95, inside the clip range, away from its kinks
    ref = true - 0.1

    def f(logits):
        with backend("reference"):
            return grpo_loss(logits, ids, adv, mask=mask, old_logp=old, ref_logp=ref, beta=0.1, temperature=0.8,
                             loss_type=loss_type, importance_sampling_level=level, inplace_grad=False)[0]  # fmt: skip

    assert torch.autograd.gradcheck(f, (x,), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("backend_name", BACKENDS)
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_selective_logprobs(backend_name, dtype_name, temperature):
    logits = (torch.randn(3, 4, 150, generator=torch.Generator().manual_seed(16)) * 4).to(DTYPES[dtype_name])
    ids = torch.randint(0, 150, (3, 4), generator=torch.Generator().manual_seed(17))
    want = torch.log_softmax(logits.double() / temperature, -1).gather(-1, ids[..., None])[..., 0]
    with backend(backend_name):
        got = selective_logprobs(logits, ids, temperature)
    assert got.dtype == torch.float32 and not got.requires_grad
    assert torch.allclose(got.double(), want, rtol=FWD_RTOL, atol=FWD_RTOL)


def test_bad_inputs_are_named():
    logits, ids, adv, mask, old, ref = make_case(seed=18)
    with pytest.raises(ValueError, match="completion_ids"):
        grpo_loss(logits, ids[:, :-1], adv, mask=mask)
    with pytest.raises(ValueError, match="loss_type"):
        grpo_loss(logits, ids, adv, mask=mask, ref_logp=ref, loss_type="ppo")
    with pytest.raises(ValueError, match="importance_sampling_level"):
        grpo_loss(logits, ids, adv, mask=mask, ref_logp=ref, importance_sampling_level="group")
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_loss(logits, ids, adv, mask=mask, beta=0.04)
    with pytest.raises(ValueError, match="advantages"):
        grpo_loss(logits, ids, adv[:2], mask=mask, ref_logp=ref)
    bad = ids.clone()
    bad[0, 0] = 10_000
    for name in BACKENDS:
        with backend(name), pytest.raises(ValueError, match=r"completion_ids\[0, 0\] = 10000"):
            grpo_loss(logits, bad, adv, mask=torch.ones_like(mask), ref_logp=ref)
    with pytest.raises(ValueError, match="backend"):
        with backend("cuda"):
            pass


def test_forcing_triton_on_cpu_without_the_interpreter_is_refused(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    logits, ids, adv, mask, old, ref = make_case(seed=19)
    with backend("triton"), pytest.raises(RuntimeError, match="TRITON_INTERPRET"):
        grpo_loss(logits, ids, adv, mask=mask, ref_logp=ref)


# ----------------------------------------------------------------------------------------------
# The same comparisons on a GPU, at the real vocabulary size
# ----------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("dtype_name", list(DTYPES))
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "vespo"])
def test_gpu_matches_oracle(dtype_name, level, loss_type):
    dtype = DTYPES[dtype_name]
    for temperature in (1.0, 0.7):
        case = make_case(B=4, L=33, V=151936, dtype=dtype, seed=20, temperature=temperature)
        logits, ids, adv, mask, old, ref = (t.cuda() for t in case)
        kw = dict(beta=0.04, eps_low=0.2, eps_high=0.28, delta=None, temperature=temperature, loss_type=loss_type)
        ours = run("auto", logits, ids, adv, mask, old, ref, importance_sampling_level=level, **kw)
        want = oracle(logits, ids, adv, mask, old, ref, level=level, **kw)
        assert_matches(_to_cpu(ours), _to_cpu(want), dtype, mask.cpu())


def _to_cpu(result):
    loss, metrics, grad = result
    return loss.cpu(), {k: v.cpu() for k, v in metrics.items()}, grad.cpu()


@pytest.mark.gpu
def test_gpu_selective_logprobs():
    logits = torch.randn(8, 64, 151936, device="cuda", dtype=torch.bfloat16) * 4
    ids = torch.randint(0, 151936, (8, 64), device="cuda")
    want = torch.log_softmax(logits.double(), -1).gather(-1, ids[..., None])[..., 0]
    assert torch.allclose(selective_logprobs(logits, ids).double(), want, rtol=FWD_RTOL, atol=FWD_RTOL)
    assert math.isfinite(float(selective_logprobs(logits * 1e3, ids).sum()))


@pytest.mark.gpu
@pytest.mark.parametrize("level", ["token", "sequence"])
def test_gpu_strided_view_inplace_and_grad_scaling(level):
    full, ids, adv, mask, old, ref = (t.cuda() for t in make_case(B=4, L=17, V=151936, dtype=torch.bfloat16, seed=21))
    ids, mask, old, ref = ids[:, :16], mask[:, :16], old[:, :16], ref[:, :16]
    kw = dict(beta=0.04, eps_low=0.2, eps_high=0.2, delta=1.5, temperature=0.7, loss_type="dapo")
    leaf = full.clone().requires_grad_(True)
    loss, metrics = grpo_loss(leaf[:, :-1], ids, adv, mask=mask, old_logp=old, ref_logp=ref,
                              importance_sampling_level=level, **kw)  # fmt: skip
    (0.25 * loss).backward()
    loss_want, metrics_want, grad_want = oracle(full[:, :-1], ids, adv, mask, old, ref, level=level, **kw)
    got = (loss.detach().cpu(), {k: v.cpu() for k, v in metrics.items()}, leaf.grad[:, :-1].cpu() * 4)
    assert_matches(got, _to_cpu((loss_want, metrics_want, grad_want)), torch.bfloat16, mask.cpu())
    assert (leaf.grad[:, -1] == 0).all()


def test_a_loss_spec_and_keyword_arguments_give_the_same_loss_and_unknown_keywords_are_refused():
    from r1omni_fast.kernels.objective import LossSpec

    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11)
    ids = torch.randint(0, 11, (2, 3))
    adv = torch.tensor([0.5, -1.0])
    ref = torch.randn(2, 3)
    spec = LossSpec(beta=0.1, loss_type="dapo", eps_high=0.28, temperature=0.9)
    by_spec, _ = grpo_loss(logits.clone(), ids, adv, spec, ref_logp=ref)
    by_kwargs, _ = grpo_loss(logits.clone(), ids, adv, ref_logp=ref, beta=0.1, loss_type="dapo", eps_high=0.28,
                             temperature=0.9)
    override, _ = grpo_loss(logits.clone(), ids, adv, spec, ref_logp=ref, beta=0.0)
    module, _ = GRPOLoss(spec)(logits.clone(), ids, adv, ref_logp=ref)
    assert torch.equal(by_spec, by_kwargs) and torch.equal(by_spec, module)
    assert not torch.equal(by_spec, override)  # a keyword replaces the spec's value
    with pytest.raises(TypeError, match="epsilon"):
        grpo_loss(logits.clone(), ids, adv, epsilon=0.2)
    with pytest.raises(ValueError, match="loss_type"):
        GRPOLoss(loss_type="nope")
