"""TRL's GRPO fields with TRL's meanings: min_p and repetition_penalty (against transformers' own
logits processors), generation_kwargs, mask_truncated_completions, shuffle_dataset,
disable_dropout, TRL-only fields rejected by name, TRL's sequence-level warning."""

from __future__ import annotations

import logging

import pytest
import torch

from _train_fixtures import grpo_trainer, shared_assets, write_config


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


_trainer = grpo_trainer


@pytest.mark.parametrize("penalty,temperature,top_k,min_p", [
    (1.0, 1.0, 0, 0.05), (1.3, 0.7, 0, 0.1), (0.8, 1.0, 20, 0.2), (2.0, 1.5, 10, None), (1.2, 1.0, 0, 1.0)])
def test_sampling_distribution_matches_transformers_processors(penalty, temperature, top_k, min_p):
    from transformers.generation.logits_process import (MinPLogitsWarper, RepetitionPenaltyLogitsProcessor,
                                                        TemperatureLogitsWarper, TopKLogitsWarper)

    from r1omni_fast.model.sampling import sampling_logits

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 64, generator=gen) * 3
    history = torch.randint(0, 64, (6, 9), generator=gen)  # tokens seen: prompt + completion so far
    seen = torch.zeros(6, 64, dtype=torch.bool)
    seen[torch.arange(6)[:, None], history] = True

    ours = sampling_logits(logits, do_sample=True, temperature=temperature, top_k=top_k, top_p=1.0, min_p=min_p,
                           repetition_penalty=penalty, seen=seen).softmax(-1)
    theirs = RepetitionPenaltyLogitsProcessor(penalty)(history, logits.clone()) if penalty != 1.0 else logits.clone()
    theirs = TemperatureLogitsWarper(temperature)(history, theirs)
    if top_k:
        theirs = TopKLogitsWarper(top_k)(history, theirs)
    if min_p is not None:
        theirs = MinPLogitsWarper(min_p)(history, theirs)
    theirs = theirs.softmax(-1)
    assert torch.allclose(ours, theirs, atol=1e-6)
    assert ((ours > 0) == (theirs > 0)).all()


def _rows(trainer, texts, truncated):
    """GenerationOutput of fixed texts, ending with EOS unless ``truncated[i]``."""
    from r1omni_fast.model import GenerationOutput

    tok = trainer.model.processor.tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    rows = [tok.encode(t, add_special_tokens=False) + ([] if cut else [eos]) for t, cut in zip(texts, truncated)]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), tok.pad_token_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    g = trainer.cfg.num_generations
    return GenerationOutput(ids, torch.tensor([len(r) for r in rows]), list(texts),
                            torch.arange(len(rows) // g).repeat_interleave(g))


def test_greedy_generation_penalises_prompt_and_completion_tokens(assets, tmp_path):
    model_dir, data = assets
    trainer = _trainer(model_dir, data, tmp_path / "run")
    prompts = trainer.prompt_inputs(trainer.collate(trainer.train_data.samples[:2]))
    model = trainer.model
    model.eval()
    plain = model.generate(prompts, num_generations=2, max_new_tokens=10, do_sample=False)
    out = model.generate(prompts, num_generations=2, max_new_tokens=10, do_sample=False, repetition_penalty=3.0)
    assert not torch.equal(plain.completion_ids, out.completion_ids)  # the penalty changes the greedy path
    # every token is the argmax of the policy's logits with the seen tokens penalised (transformers' rule)
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    mask = torch.arange(out.completion_ids.shape[1])[None] < out.lengths[:, None]
    with torch.no_grad():
        logits = model.completion_logits(prompts, out.completion_ids, mask, 2)
    penalty = RepetitionPenaltyLogitsProcessor(3.0)
    checked = 0
    for n in range(out.completion_ids.shape[0]):
        ids, valid = prompts["input_ids"][n // 2], prompts["attention_mask"][n // 2].bool()
        prompt_text = ids[valid & (ids >= 0)]
        for t in range(int(out.lengths[n])):
            history = torch.cat([prompt_text, out.completion_ids[n, :t]])[None]
            expected = penalty(history, logits[n, t][None].float().clone()).argmax(-1)
            assert int(expected) == int(out.completion_ids[n, t]), (n, t)
            checked += 1
    assert checked >= 8


def test_min_p_and_generation_kwargs_reach_the_sampler(assets, tmp_path):
    from r1omni_fast.train.grpo.rollout import sampling_settings

    model_dir, data = assets
    # min_p = 1 keeps only the most likely token: sampling becomes greedy decoding
    trainer = _trainer(model_dir, data, tmp_path / "run", generation_kwargs={"min_p": 1.0, "top_k": 5},
                       min_p=0.05, top_k=50)
    assert sampling_settings(trainer.cfg) == {"temperature": 1.0, "top_p": 1.0, "top_k": 5, "min_p": 1.0,
                                              "repetition_penalty": 1.0}
    prompts = trainer.prompt_inputs(trainer.collate(trainer.train_data.samples[:2]))
    sampled = trainer.generate(prompts)
    trainer.model.eval()
    greedy = trainer.model.generate(prompts, num_generations=2, max_new_tokens=8, do_sample=False)
    assert torch.equal(sampled.completion_ids, greedy.completion_ids)
    free = _trainer(model_dir, data, tmp_path / "free", seed=3).generate(prompts)
    assert not torch.equal(free.completion_ids, greedy.completion_ids)  # sampling without it is not greedy


@pytest.mark.parametrize("loss_type", ["dapo", "grpo"])
def test_mask_truncated_completions_leaves_them_out_of_the_loss(assets, tmp_path, loss_type):
    from r1omni_fast.train.grpo.advantages import normalise_step

    model_dir, data = assets
    trainer = _trainer(model_dir, data, tmp_path / "run", beta=0.0, loss_type=loss_type,
                       mask_truncated_completions=True, reward_funcs=["_train_fixtures.answer_length_reward"])
    batch = trainer.collate(trainer.train_data.samples[:2])
    texts = ["<think>a</think><answer>sad</answer>", "happy happy", "no", "<think>the voice is low</think>"]
    truncated = [False, True, False, True]
    rollout = trainer.make_rollout(batch, completions=_rows(trainer, texts, truncated))
    normalise_step([rollout], loss_type=loss_type, scale_rewards="group", group_size=2,
                   reward_weights=trainer.reward_weights, dist=trainer.dist)
    lengths = rollout.mask.sum(1)
    kept = torch.tensor([not t for t in truncated])
    assert torch.equal(rollout.loss_tokens.sum(1), torch.where(kept, lengths, torch.zeros_like(lengths)))
    loss, _ = trainer.policy_loss(rollout)
    # on-policy and beta = 0: each token's loss is -A, so the formulas give the loss in closed form
    adv = rollout.advantages.double()
    if loss_type == "dapo":  # TRL: num_items_in_batch counts the tokens of the kept rows only
        assert rollout.num_items == float(lengths[kept].sum())
        expected = -(adv * lengths * kept).sum() / lengths[kept].sum()
    else:  # a masked row counts 0 in the mean over the rows
        expected = -(adv * kept).sum() / len(texts)
    assert float(loss.detach()) == pytest.approx(float(expected), abs=1e-6)
    assert float(expected) != pytest.approx(float(-(adv * (lengths if loss_type == "dapo" else 1)).sum()
                                                  / (lengths.sum() if loss_type == "dapo" else len(texts))))
    # the length metrics still count every completion (TRL logs them before masking)
    metrics = trainer.rollout_metrics([rollout])
    assert metrics["completions/mean_length"] == pytest.approx(float(lengths.double().mean()))
    assert metrics["completions/clipped_ratio"] == pytest.approx(0.5)


def test_shuffle_dataset_false_keeps_the_file_order(assets, tmp_path):
    from r1omni_fast.train.stream import make_stream

    model_dir, data = assets
    firsts = {}
    for shuffle in (True, False):
        trainer = _trainer(model_dir, data, tmp_path / f"run{shuffle}", shuffle_dataset=shuffle)
        stream = make_stream(trainer.cfg, trainer.train_data, trainer.collate, None, trainer.dist)
        try:
            firsts[shuffle] = [s.id for _ in range(3) for s in stream.next().batch.samples]
        finally:
            stream.close()
    in_file = [s.id for s in trainer.train_data.samples[:6]]
    assert firsts[False] == in_file
    assert firsts[True] != in_file and sorted(set(firsts[True])) == sorted(firsts[True])


def test_disable_dropout_zeroes_every_dropout_of_policy_and_reference(assets, tmp_path):
    model_dir, data = assets

    def rates(model):
        return [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]

    kept = _trainer(model_dir, data, tmp_path / "kept")
    assert any(p > 0 for p in rates(kept.model))  # the tiny model's BERT has dropout
    off = _trainer(model_dir, data, tmp_path / "off", disable_dropout=True)
    assert rates(off.model) and all(p == 0 for p in rates(off.model)) and all(p == 0 for p in rates(off.ref))


def test_a_trl_grpo_yaml_loads_and_fields_without_meaning_are_rejected_by_name(tmp_path):
    from r1omni_fast.config import ConfigError, load_config

    trl = dict(stage="grpo", learning_rate=1e-6, num_generations=4, max_completion_length=64, temperature=0.9,
               top_p=0.95, top_k=50, min_p=0.05, repetition_penalty=1.1, beta=0.04, epsilon=0.2,
               epsilon_high=0.28, loss_type="dapo", scale_rewards="batch", mask_truncated_completions=True,
               log_completions=True, num_completions_to_print=2, shuffle_dataset=False, disable_dropout=True,
               generation_kwargs={"top_p": 0.9}, report_to="none",
               # TRL's off values of fields with no meaning here: accepted and dropped
               top_entropy_quantile=0.2, sapo_temperature_neg=1.1,
               use_vllm=False, vllm_mode="colocate", vllm_gpu_memory_utilization=0.3, use_liger_kernel=False)
    cfg = load_config(write_config(tmp_path / "trl.yaml", **trl))
    assert (cfg.min_p, cfg.repetition_penalty, cfg.generation_kwargs, cfg.shuffle_dataset) == (0.05, 1.1, {"top_p": 0.9},
                                                                                              False)
    assert (cfg.top_entropy_quantile, cfg.sapo_temperature_neg) == (0.2, 1.1)
    for bad, words in [({"use_vllm": True}, r"use_vllm: True has no meaning here.*no vLLM.*remove it"),
                       ({"vllm_mode": "server"}, r"vllm_mode has no meaning here.*remove it"),
                       ({"steps_per_generation": 2, "generation_batch_size": 8}, r"cannot both be set"),
                       ({"entropy_coef": 0.01}, r"entropy_coef: 0.01 has no meaning here.*no entropy bonus"),
                       ({"generation_kwargs": {"max_new_tokens": 9}}, r"'max_new_tokens'.*set max_completion_length"),
                       ({"generation_kwargs": {"top_p": 2}}, r"generation_kwargs: top_p: out of range"),
                       ({"min_p": 1.5}, r"min_p must be in \[0, 1\]"),
                       ({"repetition_penalty": 0}, r"repetition_penalty must be > 0")]:
        fields = {k: v for k, v in trl.items() if "vllm" not in k}
        with pytest.raises(ConfigError, match=words):
            load_config(write_config(tmp_path / "bad.yaml", **{**fields, **bad}))


def test_sequence_level_with_a_token_sum_loss_warns_as_trl(assets, tmp_path, caplog):
    model_dir, data = assets
    with caplog.at_level(logging.WARNING, logger="r1omni_fast.train.grpo"):
        _trainer(model_dir, data, tmp_path / "a", importance_sampling_level="sequence", loss_type="dapo")
    assert any("loss_type: dapo" in r.getMessage() and "GSPO" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="r1omni_fast.train.grpo"):
        _trainer(model_dir, data, tmp_path / "b", importance_sampling_level="sequence", loss_type="grpo")
    assert not [r for r in caplog.records if "GSPO" in r.getMessage()]


def test_trl_only_fields_given_as_flags_are_explained_too():
    from r1omni_fast.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"flags: use_vllm: True has no meaning here.*remove it"):
        load_config(None, ["--stage", "grpo", "--use-vllm"])
    assert load_config(None, ["--stage", "grpo", "--no-use-vllm"]).stage == "grpo"


@pytest.mark.parametrize("ga,spg,iterations", [(1, 1, 1), (2, 2, 1), (2, 4, 1), (4, 2, 1), (2, 3, 2), (3, 2, 2)])
def test_micro_batch_plan_follows_trls_prepare_inputs(ga, spg, iterations):
    """TRL's _prepare_inputs written out: a micro-batch counter over the run, a new generation
    batch every steps_per_generation * num_iterations micro-batches, entry counter % steps_per_generation."""
    from r1omni_fast.train.grpo.rollout import micro_batch_plan

    counter, trl = 0, []
    for _step in range(12):
        row = []
        for _ in range(ga):
            row.append((counter % (spg * iterations) == 0, counter % spg))
            counter += 1
        trl.append(row)
    assert [micro_batch_plan(step, ga, spg, iterations) for step in range(1, 13)] == trl


def test_steps_per_generation_serves_several_optimizer_steps(assets, tmp_path):
    """steps_per_generation 2 at accumulation 1: step 1 generates two micro-batches (with the
    sampling policy's log-probs, as the second is trained after an update) and trains on the first;
    step 2 trains on the second, generating nothing; a checkpoint waits for the spent batch."""
    from r1omni_fast.config import ConfigError
    from r1omni_fast.train.grpo.rollout import resolve_steps_per_generation
    from r1omni_fast.train.metrics_log import read_jsonl

    model_dir, data = assets
    trainer = _trainer(model_dir, data, tmp_path / "run", steps_per_generation=2, max_steps=3, save_steps=1,
                       loss_type="dapo")
    trainer.train()
    rows = read_jsonl(tmp_path / "run" / "completions.jsonl")
    assert [r["step"] for r in rows] == [1] * 8 + [3] * 8  # 2 micro-batches x 2 prompts x 2 completions
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert records[1]["num_tokens"] == records[0]["num_tokens"] < records[2]["num_tokens"]
    assert records[1]["time/generate"] == 0.0 < records[0]["time/generate"]
    assert all(r.old_logp is not None for r in trainer.buffer)
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-3"]
    # generation_batch_size counts completions over every rank (TRL)
    assert resolve_steps_per_generation(trainer.cfg.__class__(generation_batch_size=16,
                                                              per_device_train_batch_size=2, num_generations=2), 1) == 4
    with pytest.raises(ConfigError, match=r"generation_batch_size \(6 completions\) must be a multiple of"):
        resolve_steps_per_generation(trainer.cfg.__class__(generation_batch_size=6, per_device_train_batch_size=2,
                                                           num_generations=2), 1)
