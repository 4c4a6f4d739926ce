"""WAR/UAR against hand-computed confusion matrices."""

import pytest
from PIL import Image

from r1omni_fast.eval.metrics import classification_metrics, plot_confusion

LABELS = ("happy", "sad", "angry")


def test_hand_computed_matrix_with_absent_class_and_outside_predictions():
    y = ["happy", "happy", "happy", "sad", "sad", "happy"]
    p = ["happy", "sad", None, "sad", "bored", "happy"]
    m = classification_metrics(y, p, LABELS)
    #            happy sad angry other
    assert m["confusion_matrix"] == [[2, 1, 0, 1],   # happy: 4 clips
                                     [0, 1, 0, 1],   # sad: 2 clips
                                     [0, 0, 0, 0]]   # angry: never a label
    assert m["war"] == pytest.approx(3 / 6)
    # angry is absent from the labels, so UAR averages happy (2/4) and sad (1/2) only.
    assert m["uar"] == pytest.approx((2 / 4 + 1 / 2) / 2)
    assert m["per_class_recall"] == {"happy": 0.5, "sad": 0.5, "angry": None}
    assert m["outside_label_set"] == 2 and m["n"] == 6
    assert m["columns"][-1] == "other"


def test_class_never_predicted_has_zero_recall_and_lowers_uar():
    y = ["happy", "sad", "angry", "angry"]
    p = ["happy", "sad", "happy", "happy"]
    m = classification_metrics(y, p, LABELS)
    assert m["per_class_recall"]["angry"] == 0.0
    assert m["war"] == pytest.approx(0.5)
    assert m["uar"] == pytest.approx((1 + 1 + 0) / 3)


def test_label_outside_set_is_an_error_naming_it():
    with pytest.raises(ValueError, match="label 'calm' of item 1"):
        classification_metrics(["sad", "calm"], ["sad", "sad"], LABELS)
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        classification_metrics(["sad", "sad"], ["sad"], LABELS)


def test_confusion_png_is_a_valid_image(tmp_path):
    m = classification_metrics(["happy", "sad"], ["happy", None], LABELS)
    out = plot_confusion(m, tmp_path / "cm.png")
    with Image.open(out) as im:
        im.verify()
        assert im.format == "PNG"
