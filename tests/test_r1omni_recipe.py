"""R1-Omni's published GRPO recipe, selectable: its user turn (fixed question + format instruction,
placeholders first), what its BERT gate reads, its chat template (Qwen2-VL's), its raw solution
string with its case-sensitive accuracy reward, and the warning for prompts without the format.

The expected strings are built here from R1-Omni's rules written out (src/r1-v/src/open_r1/grpo.py
and trainer/humanOmni_grpo_trainer.py of HumanMLLM/R1-Omni), not from the package's code."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import jinja2
import pytest
import torch

from _train_fixtures import LABELS, clip_loader, grpo_fields, shared_assets
from test_train_grpo import _completions

# --- R1-Omni's rules, written out --------------------------------------------------------------
R1_QUESTION = ("As an emotional recognition expert; throughout the video, which emotion conveyed by the "
               "characters is the most obvious to you?")
R1_TEMPLATE = "{Question}\nOutput the thinking process in <think> </think> and final emotion in <answer> </answer> tags."
R1_MEDIA = "<vi_start><video><vi_end>\n<au_start><audio><au_end>\n"
#: Qwen2-VL-2B-Instruct's published chat template (the processor R1-Omni's GRPO trainer loads).
QWEN2VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{% for message in "
    "messages %}{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful "
    "assistant.<|im_end|>\n{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string "
    "%}{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}{% if "
    "content['type'] == 'image' or 'image' in content or 'image_url' in content %}{% set image_count.value "
    "= image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: {% endif "
    "%}<|vision_start|><|image_pad|><|vision_end|>{% elif content['type'] == 'video' or 'video' in content "
    "%}{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value "
    "}}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>{% elif 'text' in content %}{{ "
    "content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}{% if "
    "add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def r1omni_user_text(question=R1_QUESTION):
    """The text of R1-Omni's user turn after its trainer prepends the media tags."""
    return R1_MEDIA + R1_TEMPLATE.format(Question=question)


def r1omni_bert_text(question=R1_QUESTION):
    """What R1-Omni's trainer hands the BERT tokenizer: the text before the media tags are added."""
    return R1_TEMPLATE.format(Question=question)


def r1omni_qwen2vl_prompt(question=R1_QUESTION):
    """Qwen2-VL's template over R1-Omni's message: a video item, then the text item."""
    messages = [{"role": "user", "content": [{"type": "video", "video": "clip.mp4"},
                                             {"type": "text", "text": r1omni_user_text(question)}]}]
    return jinja2.Environment().from_string(QWEN2VL_TEMPLATE).render(messages=messages, add_generation_prompt=True)


def r1omni_accuracy(content, sol):
    """R1-Omni's string-matching accuracy (its math_verify branch never matches an emotion word)."""
    import re

    s = re.search(r"<answer>(.*?)</answer>", sol)
    c = re.search(r"<answer>(.*?)</answer>", content)
    truth = s.group(1).strip() if s else sol.strip()
    student = c.group(1).strip() if c else content.strip()
    return 1.0 if student == truth else 0.0


# --- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return shared_assets(tmp_path_factory)


def _data(tmp_path, data, human, gpt_case=str.capitalize):
    """The synthetic GRPO split with another human turn and the gpt labels re-spelled."""
    records = json.loads(data.train.read_text())
    for r in records:
        r["video"] = str((data.train.parent / r["video"]).resolve())
        r["conversations"][0]["value"] = human
        r["conversations"][1]["value"] = gpt_case(r["conversations"][1]["value"])
    path = tmp_path / "train.json"
    path.write_text(json.dumps(records))
    return path


def _trainer(model_dir, data_file, out, **over):
    from r1omni_fast.config import GRPOConfig
    from r1omni_fast.train.grpo import GRPOTrainer

    fields = grpo_fields(model_dir, type("D", (), {"train": data_file})(), out, beta=0.0, **over)
    fields.pop("stage")
    return GRPOTrainer(GRPOConfig(**fields), loader=clip_loader(), progress=False)


def _text_ids(tokenizer, prompt):
    """Token ids of a rendered prompt with its <video>/<audio> placeholders dropped."""
    for token in ("<video>", "<audio>"):
        prompt = prompt.replace(token, "\x00")
    return [i for piece in prompt.split("\x00") if piece for i in tokenizer.encode(piece, add_special_tokens=False)]


def _row_text_ids(inputs, row):
    ids = inputs["input_ids"][row][inputs["attention_mask"][row].bool()]
    return [int(i) for i in ids if i >= 0]


# --- tests ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("question", [None, "Which emotion does the person show?"])
def test_r1omni_prompt_style_builds_r1omnis_user_turn_and_bert_text(assets, tmp_path, question):
    model_dir, data = assets
    data_file = _data(tmp_path, data, "<video>\n<audio>\nHow does the person feel?")
    trainer = _trainer(model_dir, data_file, tmp_path / "run", prompt_style="r1omni", question=question)
    q = question or R1_QUESTION
    proc = trainer.model.processor
    tok = proc.tokenizer
    batch = trainer.collate(trainer.train_data.samples[:2])
    inputs = trainer.prompt_inputs(batch)
    # the checkpoint's own template around R1-Omni's user text, byte for byte
    expected = tok.apply_chat_template([{"role": "user", "content": r1omni_user_text(q)}], tokenize=False,
                                       add_generation_prompt=True)
    for row, sample in enumerate(batch.samples):
        assert proc.prompt_text(sample.prompt) == expected
        assert _row_text_ids(inputs, row) == _text_ids(tok, expected)
    # the BERT gate reads R1-Omni's text (question + newline + format instruction)
    bert = proc.bert_tokenizer([r1omni_bert_text(q)] * 2, return_tensors="pt", padding=True, truncation=True)
    assert torch.equal(inputs["bert_input_ids"].cpu(), bert["input_ids"])
    # the human turn of the data is not used; reward functions see the built prompt
    assert all("How does the person feel?" not in s.prompt for s in trainer.train_data.samples)


def test_data_prompt_style_keeps_the_human_turn(assets, tmp_path):
    model_dir, data = assets
    human = "<video>\n<audio>\nHow does the person feel? Output <think> </think> then <answer> </answer>."
    trainer = _trainer(model_dir, _data(tmp_path, data, human), tmp_path / "run")
    assert {s.prompt for s in trainer.train_data.samples} == {human}


def test_qwen2vl_chat_template_matches_qwen2vls_template_over_r1omnis_message(assets, tmp_path):
    model_dir, data = assets
    data_file = _data(tmp_path, data, "<video>\n<audio>\nanything")
    trainer = _trainer(model_dir, data_file, tmp_path / "run", prompt_style="r1omni", chat_template="qwen2vl")
    proc = trainer.model.processor
    expected = r1omni_qwen2vl_prompt()
    assert expected.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                               "<|vision_start|><|video_pad|><|vision_end|><vi_start><video><vi_end>\n")
    batch = trainer.collate(trainer.train_data.samples[:2])
    inputs = trainer.prompt_inputs(batch)
    for row, sample in enumerate(batch.samples):
        assert proc.prompt_text(sample.prompt, chat_template="qwen2vl") == expected
        assert _row_text_ids(inputs, row) == _text_ids(proc.tokenizer, expected)


def test_unknown_chat_template_is_refused(assets):
    from r1omni_fast.prompts import build_instruction
    from r1omni_fast.model.humanomni.tiny import build_tiny_model

    with pytest.raises(ValueError, match="chat_template"):
        build_tiny_model(seed=0).processor.prompt_text(build_instruction(), chat_template="llama")


@pytest.mark.parametrize("solution_style", ["raw", "label"])
def test_raw_solution_with_r1omni_rewards_scores_as_r1omni(assets, tmp_path, solution_style):
    """R1-Omni: solution = "<answer> {gpt} </answer>" and an exact, case-sensitive comparison, so a
    completion naming the label in another case scores 0; the label style compares canonical names."""
    model_dir, data = assets
    data_file = _data(tmp_path, data, "<video>\n<audio>\nHow does the person feel?", gpt_case=str.capitalize)
    trainer = _trainer(model_dir, data_file, tmp_path / "run", prompt_style="r1omni", reward_mode="r1omni",
                       solution_style=solution_style)
    batch = trainer.collate(trainer.train_data.samples[:2])
    a, b = (s.label for s in batch.samples)
    texts = [f"<think>x</think><answer>{a}</answer>", f"<think>x</think><answer>{a.capitalize()}</answer>",
             f"<think>y</think>\n<answer> {b.capitalize()} </answer>", f"<answer>{b}</answer>"]
    rollout = trainer.make_rollout(batch, completions=_completions(trainer, texts))
    gpts = [s.target for s in batch.samples]
    assert gpts == [a.capitalize(), b.capitalize()]
    sols = [f"<answer> {g} </answer>" for g in gpts] if solution_style == "raw" else \
        [f"<answer> {s.label} </answer>" for s in batch.samples]
    assert [s.solution for s in trainer.train_data.samples[:2]] == sols
    want = [r1omni_accuracy(t, sols[i // 2]) for i, t in enumerate(texts)]
    assert want == ([0.0, 1.0, 1.0, 0.0] if solution_style == "raw" else [1.0, 0.0, 0.0, 1.0])
    acc = rollout.rewards[:, trainer.reward_names.index("accuracy")].tolist()
    assert acc == want


def test_warning_when_prompts_do_not_ask_for_the_checked_format(assets, tmp_path, caplog):
    model_dir, data = assets
    data_file = _data(tmp_path, data, "<video>\n<audio>\nHow does the person feel?")
    with caplog.at_level(logging.WARNING, logger="r1omni_fast.train.recipe"):
        _trainer(model_dir, data_file, tmp_path / "a")
    assert "do not ask for the <think> </think> <answer> </answer> format" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="r1omni_fast.train.recipe"):
        _trainer(model_dir, data_file, tmp_path / "b", prompt_style="r1omni")  # the built prompt asks
        _trainer(model_dir, data_file, tmp_path / "c", reward_funcs=["accuracy"])  # no format reward
    assert "format" not in caplog.text


def test_eval_config_has_no_field_the_eval_command_ignores():
    """Evaluation is greedy and its answer matching is `r1omni-fast eval --answer-matching`: an
    evaluation config naming temperature or reward_mode is refused, not silently ignored."""
    from r1omni_fast.config import ConfigError, load_config

    for flag in ("--temperature", "--reward-mode"):
        with pytest.raises(ConfigError, match="unknown"):
            load_config(None, ["--stage", "eval", flag, "0.5"])


def test_recipe_fields_are_validated():
    from r1omni_fast.config import ConfigError, GRPOConfig

    for field, value in (("prompt_style", "r1-omni"), ("solution_style", "gpt"), ("chat_template", "qwen")):
        with pytest.raises(ConfigError, match=field):
            GRPOConfig(**{field: value})
    assert GRPOConfig(question="  ").question is None  # blank = R1-Omni's question
    with pytest.raises(ConfigError, match="question is the fixed question of prompt_style r1omni"):
        GRPOConfig(question="Which emotion?")  # prompt_style data would ignore it
    # defaults for new runs: the data's prompt and canonical labels; TRL's linear schedule
    g = GRPOConfig()
    assert (g.prompt_style, g.solution_style, g.chat_template, g.reward_mode) == ("data", "label", "checkpoint", "robust")
    assert g.lr_scheduler_type == "linear"


# --- the reproduction configs ------------------------------------------------------------------------
CONFIGS = Path(__file__).parent.parent / "configs"
KEYS_JSON = Path(__file__).parent / "data" / "humanomni_0_5b_keys.json"


def r1omni_grpo_trains(name):
    """R1-Omni's GRPO: the whole model trains but the towers, frozen when they load
    (humanomni/model/encoder.py: vision_tower / audio_tower .requires_grad_(False))."""
    return "vision_tower" not in name and "audio_tower" not in name


def humanomni_sft_trains(name, parts=("mm_mlp_adapter", "audio_projector", "mm_language_model")):
    """HumanOmni's mm_tunable_parts rule (humanomni/train_humanomni.py), as finetune_omni_emer.sh sets it."""
    trains = False
    if "mm_mlp_adapter" in parts:
        trains |= any(m in name for m in ("image_newline", "mm_projector"))
    if "audio_projector" in parts:
        trains |= "audio_projector" in name
    if "mm_language_model" in parts:
        trains |= not any(m in name for m in ("vision_tower", "image_newline", "aux_encoder", "mm_projector",
                                              "vision_resampler", "audio_tower", "audio_projector"))
    return trains


@pytest.mark.parametrize("config_name, rule", [("humanomni-0.5b-sft.yaml", humanomni_sft_trains),
                                               ("humanomni-0.5b-grpo-dfew.yaml", r1omni_grpo_trains)])
def test_reproduction_configs_train_r1omnis_parameter_set(config_name, rule):
    from r1omni_fast.config import load_config
    from r1omni_fast.model import OmniConfig, OmniModel
    from r1omni_fast.model.humanomni.towers import to_checkpoint_name

    cfg = load_config(CONFIGS / config_name)
    with torch.device("meta"):
        model = OmniModel(OmniConfig.humanomni_0_5b())
    model.set_trainable_parts(cfg.tunable_parts)
    names = json.loads(KEYS_JSON.read_text())["keys"]
    names.pop("lm_head.weight")  # tied to the embeddings
    expected = sorted(n for n in names if rule(n))
    got = sorted(to_checkpoint_name(n) for n, p in model.named_parameters() if p.requires_grad)
    assert got == expected
    assert any(n.startswith("model.bert_gate.") for n in got) and any(n.startswith("model.bert_model.") for n in got)
    assert not any("vision_tower" in n or "audio_tower" in n for n in got)


def test_reproduction_configs_hold_the_published_values():
    from r1omni_fast.config import load_config

    sft = load_config(CONFIGS / "humanomni-0.5b-sft.yaml")
    # finetune_omni_emer.sh: 5 epochs, global batch 16, lr 2e-5, cosine, warmup 0.03, 8 frames, pad
    assert (sft.num_train_epochs, sft.learning_rate, sft.lr_scheduler_type, sft.warmup_ratio) == (5, 2e-5, "cosine", 0.03)
    assert sft.per_device_train_batch_size * sft.gradient_accumulation_steps == 16
    assert (sft.num_frames, sft.image_aspect_ratio, sft.max_length) == (8, "pad", 2048)
    assert (sft.label_set, sft.prompt_style) == ("any", "humanomni")  # HumanOmni's SFT: no label check
    grpo = load_config(CONFIGS / "humanomni-0.5b-grpo-dfew.yaml")
    # run_grpo_humanomni.sh (8 GPUs x 1 x 2), TRL's GRPOConfig defaults then, the trainer's hard-coded sampling
    assert (grpo.num_train_epochs, grpo.lr_scheduler_type, grpo.learning_rate, grpo.beta) == (2, "linear", 1e-6, 0.04)
    assert grpo.per_device_train_batch_size * grpo.gradient_accumulation_steps == 16
    assert (grpo.num_generations, grpo.max_prompt_length, grpo.max_completion_length) == (8, 512, 512)
    assert (grpo.temperature, grpo.top_p, grpo.top_k) == (1.0, 1.0, 50)
    assert (grpo.prompt_style, grpo.question, grpo.chat_template) == ("r1omni", None, "qwen2vl")
    assert (grpo.reward_mode, grpo.solution_style, grpo.reward_funcs) == ("r1omni", "raw", ["accuracy", "format"])


@pytest.mark.parametrize("reward_mode", ["r1omni", "robust"])
def test_special_tokens_inside_a_completion_are_skipped_before_scoring(assets, tmp_path, reward_mode):
    """R1-Omni decodes completions with skip_special_tokens=True; the tags stay (here they are
    special tokens of the tokenizer, as the rewards need them)."""
    from r1omni_fast.model import GenerationOutput

    model_dir, data = assets
    trainer = _trainer(model_dir, data.train, tmp_path / "run", reward_mode=reward_mode)
    batch = trainer.collate(trainer.train_data.samples[:2])
    a, b = (s.label for s in batch.samples)
    tok = trainer.model.processor.tokenizer
    texts = [f"<think>x<|im_start|>y</think><answer>{a}<|endoftext|></answer>", f"<think>x</think><answer>{a}</answer>",
             f"<vi_start><think>z</think>\n<answer> {b} </answer>", f"<think>w</think><answer>{b}</answer><au_end>"]
    seen = ["<think>xy</think><answer>{}</answer>".format(a), f"<think>x</think><answer>{a}</answer>",
            f"<think>z</think>\n<answer> {b} </answer>", f"<think>w</think><answer>{b}</answer>"]
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    rows = [tok.encode(t, add_special_tokens=False) + [eos] for t in texts]
    ids = torch.full((4, max(map(len, rows))), tok.pad_token_id, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r)
    generated = GenerationOutput(ids, torch.tensor([len(r) for r in rows]), None, torch.tensor([0, 0, 1, 1]))
    rollout = trainer.make_rollout(batch, completions=generated)
    assert rollout.texts == seen
    fmt = rollout.rewards[:, trainer.reward_names.index("format")].tolist()
    acc = rollout.rewards[:, trainer.reward_names.index("accuracy")].tolist()
    assert fmt == [1.0] * 4 and acc == [1.0] * 4


def humanomni_sft_value(value, mm_use_x_start_end=True):
    """HumanOmni's preprocess_multimodal on one human turn (humanomni/train_humanomni.py), its
    modality map in order: <audio>, <video>, <image>."""
    starts = {"AUDIO": "<au_start>", "VIDEO": "<vi_start>", "IMAGE": "<im_start>"}
    ends = {"AUDIO": "<au_end>", "VIDEO": "<vi_end>", "IMAGE": "<im_end>"}
    for token in ["<audio>", "<video>", "<image>"]:
        x = token[1:-1]
        if token in value:
            value = value.replace(token, "").replace(token, "").strip()
            value = token + "\n" + value
            value = value.strip()
        if mm_use_x_start_end:
            value = value.replace(token, starts[x.upper()] + token + ends[x.upper()])
    return value


def humanomni_guided_prompt(value):
    """HumanOmni's guided prompt (BERT text) of the preprocessed human turn."""
    return value.replace("<image>", "").replace("\n", "").replace("<video>", "")


def test_humanomni_sft_prompt_style_matches_humanomnis_preprocessing(assets, tmp_path):
    from types import SimpleNamespace

    from r1omni_fast.data import read_data
    from r1omni_fast.model import OmniModel
    from r1omni_fast.train.sft import sft_inputs

    model_dir, data = assets
    human = "<video>\n<audio>\nHow does the person feel?\nOutput the thinking process in <think> </think>."
    records = json.loads(data.sft.read_text())[:2]
    for r in records:
        r["video"] = str((data.sft.parent / r["video"]).resolve())
        r["conversations"][0]["value"] = human
    (tmp_path / "sft.json").write_text(json.dumps(records))
    samples = read_data(tmp_path / "sft.json", labels=LABELS, kind="sft").samples
    processor = OmniModel.from_pretrained(str(model_dir)).processor
    batch = SimpleNamespace(samples=samples, frames=torch.zeros(2, 1, 3, 4, 4), mel=torch.zeros(2, 8, 10))
    value = humanomni_sft_value(human)
    assert value == ("<vi_start><video><vi_end>\n<au_start><audio><au_end>\n\n\nHow does the person feel?\n"
                     "Output the thinking process in <think> </think>.")
    instruction = processor.tokenizer.apply_chat_template([{"role": "user", "content": value}], tokenize=False,
                                                          add_generation_prompt=True)
    inputs = sft_inputs(processor, batch, 4096, prompt_style="humanomni")
    default = sft_inputs(processor, batch, 4096)
    for row, sample in enumerate(samples):
        prompt_ids = [int(i) for i, lab, m in zip(inputs["input_ids"][row], inputs["labels"][row],
                                                  inputs["attention_mask"][row]) if lab == -100 and m and i >= 0]
        assert prompt_ids == _text_ids(processor.tokenizer, instruction)
        # HumanOmni's labels: every token of the rendered conversation after the prompt's tokens,
        # the newline its template writes after <|im_end|> included
        conversation = processor.tokenizer.apply_chat_template(
            [{"role": "user", "content": value}, {"role": "assistant", "content": sample.target}],
            tokenize=False, add_generation_prompt=False)
        assert conversation == instruction + sample.target + "<|im_end|>\n"
        conversation_ids = _text_ids(processor.tokenizer, conversation)
        assert conversation_ids[:len(prompt_ids)] == prompt_ids
        labels = inputs["labels"][row][inputs["labels"][row] != -100].tolist()
        assert labels == conversation_ids[len(prompt_ids):]
        assert processor.tokenizer.decode(labels[-2:]) == "<|im_end|>\n"
        # the default ends the target at <|im_end|>, the token generation stops at
        assert default["labels"][row][default["labels"][row] != -100].tolist() == labels[:-1]
    guided = humanomni_guided_prompt(value)
    assert guided == "<vi_start><vi_end><au_start><audio><au_end>How does the person feel?Output the thinking process in <think> </think>."
    bert = processor.bert_tokenizer([guided] * 2, return_tensors="pt", padding=True, truncation=True)
    assert torch.equal(inputs["bert_input_ids"], bert["input_ids"])
    assert not torch.equal(default["bert_input_ids"][:, :bert["input_ids"].shape[1]], bert["input_ids"])


def _cold_start_file(tmp_path, data, answers):
    records = json.loads(data.sft.read_text())[:len(answers)]
    for r, answer in zip(records, answers):
        r["video"] = str((data.sft.parent / r["video"]).resolve())
        r["conversations"][1]["value"] = f"<think>the voice trembles</think>\n<answer>{answer}</answer>"
    path = tmp_path / "emer.json"
    path.write_text(json.dumps(records))
    return path


def test_open_vocabulary_cold_start_records_train_with_label_set_any(assets, tmp_path):
    from r1omni_fast.config import ConfigError, GRPOConfig, SFTConfig
    from r1omni_fast.data import read_data

    _, data = assets
    path = _cold_start_file(tmp_path, data, ["worried", "Sad", "excited", "fearful"])
    strict = read_data(path, labels="mafw", kind="sft", on_error="skip")
    assert [s.label for s in strict.samples] == ["sad", "fear"] and len(strict.problems) == 2
    open_set = read_data(path, labels="any", kind="sft")
    assert [s.label for s in open_set.samples] == ["worried", "sad", "excited", "fear"]
    assert SFTConfig(label_set="any").label_set == "any"
    for make in (lambda: SFTConfig(label_set="any", eval_file="x.json"), lambda: GRPOConfig(label_set="any")):
        with pytest.raises(ConfigError, match="label_set: 'any'"):
            make()


def test_scoring_refuses_the_open_label_set(assets):
    from r1omni_fast.eval.runner import load_samples
    from r1omni_fast.rewards import accuracy_reward

    _, data = assets
    with pytest.raises(ValueError, match="scoring needs a closed set"):
        accuracy_reward(["<answer>sad</answer>"], ["<answer> sad </answer>"], labels="any")
    with pytest.raises(ValueError, match="scoring needs a closed set"):
        load_samples(data.test, label_set="any")


def test_data_check_reports_sft_answers_outside_the_set_without_failing(assets, tmp_path):
    from r1omni_fast.data.check import format_summary, summarize

    _, data = assets
    path = _cold_start_file(tmp_path, data, ["worried", "sad", "worried", "excited"])
    summary = summarize(path, labels="mafw", kind="sft")
    assert summary.ok and not summary.data.problems
    assert summary.outside_labels == {"worried": 2, "excited": 1}
    assert summary.label_counts["sad"] == 1
    assert "outside     worried 2, excited 1" in format_summary(summary)
    # bare labels (GRPO / evaluation data) stay checked against the set
    records = json.loads(data.train.read_text())[:2]
    for r in records:
        r["video"] = str((data.train.parent / r["video"]).resolve())
    records[0]["conversations"][1]["value"] = "worried"
    (tmp_path / "labels.json").write_text(json.dumps(records))
    summary = summarize(tmp_path / "labels.json", labels="mafw", kind="label")
    assert not summary.ok and "unknown label 'worried'" in str(summary.data.problems[0])


def r1omni_eval_correct(response, gt):
    """R1-Omni's eval_mafw_dfew.py: mm_infer strips the response; accuracy_score(refs=gt, hyps=response.lstrip())."""
    return response.strip().lstrip() == gt


@pytest.mark.parametrize("matching", ["robust", "r1omni", "raw"])
def test_eval_answer_matching_modes(assets, tmp_path, matching):
    from r1omni_fast.data import read_data
    from r1omni_fast.eval.runner import score_rows, summarise
    from r1omni_fast.labels import resolve

    _, data = assets
    path = _data(tmp_path, data, "<video>\n<audio>\nHow does the person feel?", gpt_case=str.capitalize)
    sample = next(s for s in read_data(path, labels=LABELS).samples if s.label == "sad")
    texts = ["<think>x</think><answer>Sad</answer>", "<answer>sad</answer>", " Sad \n", "<answer>happy</answer>"]
    samples = [sample] * 4
    oracle = {"robust": [True, True, True, False],  # the label named, any case
              "r1omni": [r1omni_accuracy(t, f"<answer> {sample.target} </answer>") == 1.0 for t in texts],
              "raw": [r1omni_eval_correct(t, sample.target) for t in texts]}[matching]
    assert sample.target == "Sad"
    rows = score_rows(samples, texts, resolve(LABELS), matching)
    assert [r["correct"] for r in rows] == oracle
    assert oracle == {"robust": [True, True, True, False], "r1omni": [True, False, True, False],
                      "raw": [False, False, True, False]}[matching]
    # a wrong answer spelled as another label is counted as that label; others fall in "other"
    assert rows[3]["prediction"] == ("happy" if matching != "raw" else None)
    assert summarise(rows, resolve(LABELS))["war"] == sum(oracle) / 4


R1_EVAL_BASE = ("As an emotional recognition expert, in the video, when the characters display their emotions, "
                "which predominant feeling is most clearly expressed?\n")


def mm_infer_prompt(tokenizer, instruct):
    """humanomni/__init__.py mm_infer, modal video_audio, mm_use_x_start_end, no system message
    (HumanOmni_qwen2): the chat-templated prompt and the text its BERT gate reads."""
    message = [{"role": "user", "content": "<video>" + "\n" + "<audio>" + "\n" + instruct}]
    prompt = tokenizer.apply_chat_template(message, tokenize=False, add_generation_prompt=True)
    prompt = prompt.replace("<video>", "<vi_start><video><vi_end>").replace("<audio>", "<au_start><audio><au_end>")
    return prompt, instruct


@pytest.mark.parametrize("preset, labels, instruct", [
    ("r1omni-eval", "dfew", R1_EVAL_BASE),
    ("r1omni-infer", "dfew", R1_QUESTION + "  Output the thinking process in <think> </think> and final emotion in "
                                           "<answer> </answer> tags."),
    ("humanomni-eval", "dfew", R1_EVAL_BASE + "happy ,surprise ,neutral ,angry ,disgust ,sad ,fear"),
    ("humanomni-eval", "mafw", R1_EVAL_BASE + "happy ,surprise ,neutral ,angry ,disgust ,sad ,fear ,contemptuous, "
                                              "disappointed, helpless, anxious"),
])
def test_eval_prompt_presets_render_as_the_published_scripts(assets, preset, labels, instruct):
    from r1omni_fast.data import read_data
    from r1omni_fast.eval.runner import eval_prompt, instruction_for
    from r1omni_fast.model import OmniModel

    model_dir, data = assets
    processor = OmniModel.from_pretrained(str(model_dir)).processor
    sample = read_data(data.test, labels=LABELS).samples[0]
    instruction = instruction_for(sample, ("video", "audio"), eval_prompt(preset, labels))
    prompt, bert_text = mm_infer_prompt(processor.tokenizer, instruct)
    assert processor.prompt_text(instruction) == prompt
    ours = processor.bert_tokenizer([processor.bert_text(instruction)])["input_ids"]
    assert ours == processor.bert_tokenizer([bert_text])["input_ids"]


def test_humanomni_eval_preset_needs_dfew_or_mafw():
    from r1omni_fast.eval.runner import eval_prompt

    with pytest.raises(ValueError, match="use --labels dfew or mafw"):
        eval_prompt("humanomni-eval", "ravdess")
    with pytest.raises(ValueError, match="unknown prompt preset"):
        eval_prompt("r1omni", "dfew")


def test_in_training_evaluation_asks_in_the_layout_sft_trained_on(assets, tmp_path):
    from r1omni_fast.config import SFTConfig
    from r1omni_fast.data import read_data
    from r1omni_fast.train import common
    from r1omni_fast.train.evaluation import evaluate_answers

    from _train_fixtures import sft_fields

    model_dir, data = assets
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, instructions, *args, **kwargs):
            seen.append((list(instructions), kwargs.get("bert_texts")))
            return self.inner(instructions, *args, **kwargs)

    samples = read_data(data.test, labels=LABELS).samples[:2]
    for style in ("humanomni", "data"):
        fields = sft_fields(model_dir, data, tmp_path / style, prompt_style=style, eval_max_new_tokens=2)
        fields.pop("stage")
        cfg = SFTConfig(**fields)
        model = common.load_policy(str(model_dir), cfg, torch.device("cpu"))
        model.processor = Spy(model.processor)
        collate = common.make_collator(cfg, model, loader=clip_loader())
        evaluate_answers(model, type("D", (), {"samples": samples})(), collate, cfg, torch.device("cpu"))
    (humanomni, bert), (plain, no_bert) = seen
    value = humanomni_sft_value(samples[0].prompt, mm_use_x_start_end=False)
    assert humanomni[0] == value and bert[0] == humanomni_guided_prompt(humanomni_sft_value(samples[0].prompt))
    assert plain[0] == samples[0].prompt and no_bert is None


def _input_dependent_generate(model, seen):
    """Replaces ``model.generate``: each answer is a function of everything the model is given
    (prompt tokens, frames, mel, BERT ids), in one of four spellings (right format, capitalised,
    no tags, cut off by the budget), so that any difference in preprocessing shows in the numbers."""
    from r1omni_fast.model import GenerationOutput

    def generate(inputs, num_generations=1, max_new_tokens=8, do_sample=False, **kwargs):
        assert num_generations == 1 and not do_sample
        rows = inputs["input_ids"].shape[0]
        texts, lengths = [], []
        for r in range(rows):
            mask = inputs["attention_mask"][r].bool()
            key = (tuple(inputs["input_ids"][r][mask].tolist()),
                   round(float(inputs["pixel_values"][r].double().sum()), 2),
                   round(float(inputs["audio_features"][r].double().sum()), 2),
                   tuple(inputs["bert_input_ids"][r].tolist()))
            h = abs(hash(key))
            label = LABELS[h % len(LABELS)]
            spelling = (h // 7) % 4
            texts.append([f"<think>I see it.</think><answer>{label}</answer>", f"<answer>{label.capitalize()}</answer>",
                          f"it is {label}", f"<think>I see {label} and"][spelling])
            lengths.append(max_new_tokens if spelling == 3 else 3)
            seen.append(key)
        eos = model.processor.eos_token_ids[0]
        ids = torch.full((rows, max_new_tokens), 5, dtype=torch.long)
        for r, n in enumerate(lengths):
            if n < max_new_tokens:
                ids[r, n - 1] = eos
        return GenerationOutput(ids, torch.tensor(lengths), texts, torch.arange(rows))

    return generate


@pytest.mark.parametrize("stage, over, settings", [
    ("sft", dict(prompt_style="data", image_aspect_ratio="pad"),
     dict(aspect="pad", prompt_layout="data", chat_template="checkpoint", answer_matching="robust")),
    ("sft", dict(prompt_style="humanomni", image_aspect_ratio="resize"),
     dict(aspect="resize", prompt_layout="humanomni", chat_template="checkpoint", answer_matching="robust")),
    ("grpo", dict(reward_mode="r1omni", chat_template="qwen2vl", image_aspect_ratio="pad"),
     dict(aspect="pad", prompt_layout="data", chat_template="qwen2vl", answer_matching="r1omni")),
])
def test_in_training_evaluation_equals_eval_with_the_same_settings(assets, tmp_path, monkeypatch, stage, over,
                                                                   settings):
    from r1omni_fast.config import GRPOConfig, SFTConfig
    from r1omni_fast.data import read_data
    from r1omni_fast.eval.runner import evaluate_rows
    from r1omni_fast.train import common
    from r1omni_fast.train.evaluation import evaluate_answers

    from _train_fixtures import sft_fields

    model_dir, data = assets
    make = sft_fields if stage == "sft" else grpo_fields
    fields = make(model_dir, data, tmp_path / "run", eval_max_new_tokens=6, per_device_eval_batch_size=3,
                  num_frames=2, **over)
    fields.pop("stage")
    cfg = (SFTConfig if stage == "sft" else GRPOConfig)(**fields)
    model = common.load_policy(str(model_dir), cfg, torch.device("cpu"))
    eval_data = read_data(data.train, labels=LABELS)  # 12 clips with bare labels
    in_training, by_eval, other = [], [], []
    monkeypatch.setattr(model, "generate", _input_dependent_generate(model, in_training))
    collate = common.make_collator(cfg, model, loader=clip_loader())
    logged = evaluate_answers(model, eval_data, collate, cfg, torch.device("cpu"))

    monkeypatch.setattr(model, "generate", _input_dependent_generate(model, by_eval))
    result = evaluate_rows(model, eval_data, num_frames=2, max_new_tokens=6, batch_size=2, label_set=LABELS,
                           loader=clip_loader(), progress=False, **settings)
    m = result.metrics
    assert in_training == by_eval  # the model was given the same inputs, clip for clip
    assert logged == {"eval/accuracy": m["war"], "eval/uar": m["uar"], "eval/format_rate": m["format_rate"],
                      "eval/truncated": m["truncated"] / m["n"], "eval/n": m["n"]}
    # the scripted answers are a real mix: well formed or not, several labels
    assert 0 < m["format_rate"] < 1 and m["n"] == 12
    assert len({r["prediction"] for r in result.rows}) > 1

    # another layout gives the model other inputs: the comparison can fail (the synthetic clips
    # are square, so pad and resize give the same frames here)
    monkeypatch.setattr(model, "generate", _input_dependent_generate(model, other))
    flipped = dict(settings, prompt_layout="data" if settings["prompt_layout"] == "humanomni" else "humanomni")
    evaluate_rows(model, eval_data, num_frames=2, max_new_tokens=6, batch_size=2, label_set=LABELS,
                  loader=clip_loader(), progress=False, **flipped)
    assert other != in_training
