"""Reasoning grounding: the modalities a trace claims (r1omni_fast.grounding), the emotion it
expresses (r1omni_fast.reasoning_emotion), and the two rewards built on them (cue_grounding,
think_emotion). Expected values are worked out by hand from the module docstrings' rules."""

from __future__ import annotations

import json

import pytest

from r1omni_fast.grounding import CueLexicon, parse_cue, sentences
from r1omni_fast.reasoning_emotion import ClassifierError, LexiconClassifier, load_classifier, sentence_agreements
from r1omni_fast.rewards import REWARD_FUNCS, cue_grounding, make_think_emotion, score_batch, think_emotion


def test_sentences_split_after_end_marks_and_at_newlines():
    assert sentences("The face smiles. The voice is loud!\nSo happy; yes? ok") == [
        "The face smiles.", "The voice is loud!", "So happy;", "yes?", "ok"]
    assert sentences(None) == [] and sentences("   ") == []
    assert sentences("3.5 seconds in") == ["3.5 seconds in"]  # no whitespace after the dot


@pytest.mark.parametrize("trace,claimed", [
    ("The face shows a wide smile.", {"video"}),
    ("The voice sounds cheerful.", {"audio"}),
    ("A smile on the face and a loud voice.", {"video", "audio"}),
    ("The audio track is silent, so the sound gives no cue. The face frowns.", {"video"}),  # negated sentence
    ("She isn't smiling.", set()),  # "isn" is a negation word
    ("It is sad.", set()),
    (None, set()),
])
def test_claimed_modalities(trace, claimed):
    assert CueLexicon().claimed(trace) == frozenset(claimed)


def test_a_custom_lexicon_from_a_file_and_its_errors(tmp_path):
    path = tmp_path / "lex.json"
    path.write_text(json.dumps({"visual": ["Glow"], "auditory": ["chime"]}))
    lexicon = CueLexicon.from_file(path)
    assert lexicon.claimed("A glow. A chime.") == {"video", "audio"}
    assert lexicon.claimed("The face smiles.") == frozenset()  # the default visual list is replaced
    path.write_text(json.dumps({"visual": ["face"], "auditory": ["face"]}))
    with pytest.raises(ValueError, match="both the visual and the auditory list"):
        CueLexicon.from_file(path)
    path.write_text(json.dumps({"visul": ["face"]}))
    with pytest.raises(ValueError, match="expected a JSON object with word lists"):
        CueLexicon.from_file(path)
    with pytest.raises(ValueError, match="single words"):
        CueLexicon(visual=frozenset({"wide smile"}))


@pytest.mark.parametrize("value,modalities", [
    ("video", {"video"}), ("visual", {"video"}), ("audio", {"audio"}), ("both", {"video", "audio"}),
    ("video+audio", {"video", "audio"}), ("Audio, Video", {"video", "audio"}), (["auditory"], {"audio"}),
])
def test_cue_values(value, modalities):
    assert parse_cue(value) == frozenset(modalities)


def test_cue_value_errors_name_the_record():
    assert parse_cue(None) is None
    for bad in ("face", 3, [], "video+smell"):
        with pytest.raises(ValueError, match="record r7"):
            parse_cue(bad, where="record r7")


def test_cue_grounding_reward_scores_exact_claims_and_skips_records_without_a_cue():
    completions = ["<think>The face smiles.</think><answer>happy</answer>",
                   "<think>The face smiles and the voice is loud.</think><answer>happy</answer>",
                   "<think>The voice trembles.</think><answer>sad</answer>",
                   "<answer>sad</answer>",
                   "<think>The face smiles.</think><answer>happy</answer>"]
    cues = ["video", "video", "both", "audio", None]
    assert cue_grounding(completions, cue=cues) == [1.0, 0.0, 0.0, 0.0, None]
    # a model that always cites the face: right on face clips only
    always_face = ["<think>The face tells it.</think><answer>x</answer>"] * 3
    assert cue_grounding(always_face, cue=["video", "audio", "both"]) == [1.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="completion 1"):
        cue_grounding(completions[:2], cue=["video", "smell"])
    # by name in reward_funcs, through the batch scorer (None -> NaN: not scored)
    out = score_batch(completions, ["sad"] * 5, funcs=["cue_grounding"], cue=cues)
    assert list(out["cue_grounding"][:4]) == [1.0, 0.0, 0.0, 0.0] and out["cue_grounding"][4] != out["cue_grounding"][4]
    assert REWARD_FUNCS["cue_grounding"] is cue_grounding


def test_lexicon_classifier_counts_emotion_words():
    clf = LexiconClassifier("mafw")
    assert clf(["She looks happy and cheerful, a little sad.", "Nothing here.", "worried eyes"]) == [
        "happy", None, "anxious"]
    assert clf.classify("sad then happy") == "sad"  # a tie goes to the first mentioned


def test_sentence_agreements_hand_computed():
    clf = LexiconClassifier("dfew")
    thinks = ["The face looks happy. The voice is cheerful. The room is blue.",  # 2 non-neutral, both happy -> 1.0
              "The face looks happy. The voice sounds sad.",  # 1 of 2 -> 0.5
              "The face is calm. Nothing else.",  # neutral label: 2 of 2 sentences neutral -> 1.0
              None]  # no trace -> 0.0
    assert sentence_agreements(thinks, ["happy", "happy", "neutral", "sad"], clf) == [1.0, 0.5, 1.0, 0.0]
    with pytest.raises(ValueError, match="2 traces but 1 labels"):
        sentence_agreements(thinks[:2], ["happy"], clf)


def test_think_emotion_reward_and_a_custom_classifier():
    completions = ["<think>The face looks happy. The voice is sad.</think><answer>happy</answer>",
                   "<think>Tears and a sad voice.</think><answer>sad</answer>"]
    assert think_emotion(completions, label=["happy", "sad"]) == [0.5, 1.0]
    assert think_emotion(completions, solution=["<answer> happy </answer>", "<answer> sad </answer>"]) == [0.5, 1.0]
    with pytest.raises(ValueError, match="names no label"):
        think_emotion(completions, label=["happy", "bored"])
    always_sad = make_think_emotion(lambda texts: ["sad"] * len(texts), "dfew")
    assert always_sad(completions, label=["happy", "sad"]) == [0.0, 1.0]


def test_classifier_specs_that_cannot_work_are_refused(tmp_path):
    with pytest.raises(ClassifierError, match="neither a folder nor module:function"):
        load_classifier("no-such-thing", "dfew")
    with pytest.raises(ClassifierError, match="cannot be imported"):
        load_classifier("no_such_module_xyz:fn", "dfew")
    (tmp_path / "notclf").mkdir()
    with pytest.raises(ClassifierError, match="has no config.json"):
        load_classifier(str(tmp_path / "notclf"), "dfew")
    bad = make_think_emotion(lambda texts: ["bored"] * len(texts), "dfew")
    with pytest.raises(ClassifierError, match="names no label"):
        bad(["<think>x.</think><answer>happy</answer>"], label=["happy"])


def test_a_local_transformers_sequence_classifier(tmp_path):
    """A tiny BERT classifier built offline from a config: its argmax class, mapped by id2label
    onto the label set (GoEmotions-style names: joy -> happy)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "glad": 4, "gloom": 5}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    config = BertConfig(vocab_size=6, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                        intermediate_size=8, num_labels=3, id2label={0: "joy", 1: "sadness", 2: "curiosity"},
                        label2id={"joy": 0, "sadness": 1, "curiosity": 2})
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # make the classes follow the words: "glad" -> joy, "gloom" -> sadness, else curiosity
        model.bert.embeddings.word_embeddings.weight.zero_()
        model.bert.embeddings.word_embeddings.weight[4, 0] = 5.0
        model.bert.embeddings.word_embeddings.weight[5, 1] = 5.0
        for layer in model.bert.encoder.layer:  # each layer passes its input through (residual + LayerNorm)
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        model.bert.embeddings.position_embeddings.weight.zero_()
        model.bert.embeddings.token_type_embeddings.weight.zero_()
        model.bert.pooler.dense.weight.copy_(torch.eye(8))
        model.bert.pooler.dense.bias.zero_()
        model.classifier.weight.zero_()
        model.classifier.weight[0, 0] = 1.0
        model.classifier.weight[1, 1] = 1.0
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 0.05]))
    folder = tmp_path / "clf"
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    clf = load_classifier(str(folder), "dfew")
    assert clf(["glad glad", "gloom", "neither"]) == ["happy", "sad", None]
    # a folder holding another kind of model is refused before any text is classified
    from transformers import BertModel

    other = tmp_path / "encoder"
    BertModel(BertConfig(vocab_size=6, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
                         intermediate_size=8)).save_pretrained(other)
    with pytest.raises(ClassifierError, match="not a sequence classifier"):
        load_classifier(str(other), "dfew")


def test_grpo_trains_with_the_grounding_reward_by_name(tmp_path):
    """reward_funcs: [accuracy, format, cue_grounding] on records with a cue field: the reward's
    column is logged every step (tiny HumanOmni, synthetic clips)."""
    import yaml
    from click.testing import CliRunner

    from r1omni_fast.cli import main

    runner = CliRunner()
    assert runner.invoke(main, ["data", "synth", str(tmp_path / "data"), "--n", "6"]).exit_code == 0
    assert runner.invoke(main, ["model", "tiny", str(tmp_path / "model")]).exit_code == 0
    cfg = dict(stage="grpo", model_name_or_path=str(tmp_path / "model"), data_file=str(tmp_path / "data" / "train.json"),
               output_dir=str(tmp_path / "run"), max_steps=2, num_generations=2, max_completion_length=6,
               per_device_train_batch_size=2, num_frames=2, bf16=False, logging_steps=1, save_steps=2,
               label_set=["happy", "sad", "angry", "neutral"], reward_funcs=["accuracy", "format", "cue_grounding"])
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "grpo.yaml")])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    keys = {k for r in rows for k in r if "cue_grounding" in k}
    assert keys, sorted({k for r in rows for k in r})


def test_grpo_refuses_an_unknown_cue_value_before_any_step(tmp_path):
    """A cue field naming no modality stops a cue_grounding run before the model loads or a step runs."""
    import yaml
    from click.testing import CliRunner

    from r1omni_fast.cli import main
    from r1omni_fast.exit_status import EXIT_USAGE

    runner = CliRunner()
    assert runner.invoke(main, ["data", "synth", str(tmp_path / "data"), "--n", "6"]).exit_code == 0
    records = json.loads((tmp_path / "data" / "train.json").read_text())
    records[-1]["cue"] = "smell"
    (tmp_path / "data" / "bad.json").write_text(json.dumps(records))
    cfg = dict(stage="grpo", model_name_or_path=str(tmp_path / "no-model-needed"),
               data_file=str(tmp_path / "data" / "bad.json"), output_dir=str(tmp_path / "run"), max_steps=1,
               num_generations=2, max_completion_length=4, per_device_train_batch_size=2, num_frames=2, bf16=False,
               label_set=["happy", "sad", "angry", "neutral"], reward_funcs=["accuracy", "format", "cue_grounding"])
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "grpo.yaml")])
    assert result.exit_code == EXIT_USAGE, result.output
    assert f"record {records[-1]['id']}" in result.output and "cue 'smell' names no modality" in result.output
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    cfg["reward_funcs"] = ["accuracy", "format"]  # without the reward nothing reads the field
    (tmp_path / "grpo.yaml").write_text(yaml.safe_dump(cfg))
    result = runner.invoke(main, ["train", "--config", str(tmp_path / "grpo.yaml")])
    assert "cue" not in result.output
