"""Label sets by name, relabelling and the LSTM study's training caps, on the sample."""
from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from fer_lib.data import lstm_study_three_classes
from fer_lib.labels import LABEL_SETS, canonical_emotion


@pytest.mark.parametrize("raw, canonical", [
    ("Anger", "angry"), ("sadness", "sad"), ("SA", "sad"), ("happiness", "happy"), ("NE", "neutral"),
    ("contempt", "contempt"), ("Surprise ", "surprise"),
])
def test_aliases_reach_canonical_names(raw, canonical):
    assert canonical_emotion(raw) == canonical


def test_unknown_emotion_is_an_error_naming_the_choices():
    with pytest.raises(KeyError, match="Unknown emotion label 'joy'"):
        canonical_emotion("joy")


def test_three_classes_merge_everything_but_happy_and_sad(fer_sample):
    three = fer_sample.relabel("happy_sad_unknown")
    assert three.class_names == ("happy", "sad", "unknown")
    for emotion, label in zip(three.emotions, three.label_names):
        assert label == (emotion if emotion in ("happy", "sad") else "unknown")
    assert len(three) == len(fer_sample)
    np.testing.assert_array_equal(three.ids, fer_sample.ids)


def test_valence4_groups_and_ckplus_contempt_is_negative(fer_sample, ck_sample):
    fer4 = fer_sample.relabel("valence4")
    expected = {"happy": "positive", "angry": "negative", "disgust": "negative", "sad": "negative",
                "fear": "awe", "surprise": "awe", "neutral": "neutral"}
    assert all(expected[e] == label for e, label in zip(fer4.emotions, fer4.label_names))
    ck4 = ck_sample.relabel("valence4")
    assert set(ck4.label_names[ck4.emotions == "contempt"]) == {"negative"}


def test_relabel_to_a_set_without_an_emotion_drops_and_reports_it(ck_sample):
    with pytest.warns(UserWarning, match="outside label set emotion7"):
        seven = ck_sample.relabel("emotion7")
    assert "contempt" not in set(seven.emotions)
    assert len(seven) == len(ck_sample) - int((ck_sample.emotions == "contempt").sum())


def test_lstm_caps_apply_to_training_only(fer_sample):
    # The sample has about 40 training images per class: cap to small numbers to see the caps bite.
    capped = fer_sample.cap_classes({"happy": 10, "sad": 5, "angry": 3, "disgust": None}, seed=0)
    train = Counter(capped.select_split("Training").emotions)
    original = Counter(fer_sample.select_split("Training").emotions)
    assert train["happy"] == 10 and train["sad"] == 5 and train["angry"] == 3
    assert train["disgust"] == original["disgust"] and train["fear"] == original["fear"]
    for split in ("PublicTest", "PrivateTest"):
        assert len(capped.select_split(split)) == len(fer_sample.select_split(split))


def test_lstm_study_target_is_capped_then_relabelled(fer_sample):
    three = lstm_study_three_classes(fer_sample, seed=0)
    assert three.label_set == "happy_sad_unknown"
    # The sample is under every cap, so nothing is removed: every image survives relabelled.
    assert len(three) == len(fer_sample)


def test_every_label_set_maps_only_to_its_classes():
    for label_set in LABEL_SETS.values():
        assert set(label_set.mapping.values()) <= set(label_set.classes)
