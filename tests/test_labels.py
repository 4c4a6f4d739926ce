import pytest

from r1omni_fast.labels import DFEW, MAFW, RAVDESS, LabelSet, resolve


def test_builtin_sets_have_the_documented_sizes_and_order():
    assert DFEW == ("happy", "surprise", "neutral", "angry", "disgust", "sad", "fear")
    assert len(MAFW) == 11 and MAFW[:7] == DFEW
    assert set(MAFW[7:]) == {"contemptuous", "disappointed", "helpless", "anxious"}
    assert "calm" in RAVDESS and "fearful" not in RAVDESS and len(RAVDESS) == 8


@pytest.mark.parametrize("word,expected", [
    ("Sad", "sad"), ("  FEARFUL ", "fear"), ("surprised", "surprise"), ("happiness", "happy"),
    ("anger", "angry"), ("disgusted", "disgust"), ("calm", None), ("bored", None),
])
def test_canonical_maps_inflections_within_dfew(word, expected):
    assert resolve("dfew").canonical(word) == expected


def test_alias_only_maps_to_labels_in_the_set():
    assert resolve("mafw").canonical("contempt") == "contemptuous"
    assert resolve("dfew").canonical("contempt") is None
    assert resolve("ravdess").canonical("calmness") == "calm"


def test_resolve_accepts_lists_and_rejects_unknown_names():
    assert resolve(["Pos", "neg"]).labels == ("pos", "neg")
    with pytest.raises(ValueError, match="unknown label set 'affectnet'"):
        resolve("affectnet")
    with pytest.raises(ValueError, match="duplicate"):
        LabelSet(("a", "a"))
