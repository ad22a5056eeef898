"""Emotion labels by name, never by index.

FER2013, CK+ and JAFFE number their classes differently (FER2013's 0 is *angry*, JAFFE's 0 is
*neutral*), so every loader converts its labels to the canonical names below, and every label set the
studies use is a mapping from those names to the set's class names.
"""
from __future__ import annotations

from dataclasses import dataclass, field

#: The canonical emotion vocabulary, in FER2013's order, then CK+'s extra class.
EMOTIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "contempt")

#: Spellings used by the datasets and by readers, mapped to canonical names.
ALIASES: dict[str, str] = {
    "anger": "angry", "angry": "angry", "an": "angry",
    "disgust": "disgust", "disgusted": "disgust", "di": "disgust",
    "fear": "fear", "fearful": "fear", "fe": "fear",
    "happy": "happy", "happiness": "happy", "ha": "happy",
    "sad": "sad", "sadness": "sad", "sa": "sad",
    "surprise": "surprise", "surprised": "surprise", "su": "surprise",
    "neutral": "neutral", "ne": "neutral",
    "contempt": "contempt", "co": "contempt",
}


def canonical_emotion(name: str) -> str:
    """Canonical name of an emotion label (``'Sadness'`` -> ``'sad'``, JAFFE's ``'SA'`` -> ``'sad'``)."""
    key = str(name).strip().lower()
    if key not in ALIASES:
        raise KeyError(f"Unknown emotion label {name!r}; known: {sorted(set(ALIASES.values()))}")
    return ALIASES[key]


@dataclass(frozen=True)
class LabelSet:
    """A classification target: class names in order, and which canonical emotions feed each class.

    Emotions absent from ``mapping`` are outside the label set; relabelling drops them and counts them.
    """

    name: str
    classes: tuple[str, ...]
    mapping: dict[str, str] = field(hash=False)
    description: str = ""

    def __post_init__(self):
        unknown = set(self.mapping.values()) - set(self.classes)
        if unknown:
            raise ValueError(f"Label set {self.name}: targets {unknown} are not among classes {self.classes}")

    def class_of(self, emotion: str) -> str | None:
        return self.mapping.get(canonical_emotion(emotion))


EMOTION7 = LabelSet(
    "emotion7",
    ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    {e: e for e in EMOTIONS[:7]},
    "FER2013's seven basic emotions (the 3DFER study).",
)

#: CK+'s own seven: the six basic emotions and contempt (no neutral).
CKPLUS7 = LabelSet(
    "ckplus7",
    ("angry", "contempt", "disgust", "fear", "happy", "sad", "surprise"),
    {e: e for e in ("angry", "contempt", "disgust", "fear", "happy", "sad", "surprise")},
    "CK+'s seven posed classes (the 3D-CNN video study).",
)

HAPPY_SAD_UNKNOWN = LabelSet(
    "happy_sad_unknown",
    ("happy", "sad", "unknown"),
    {"happy": "happy", "sad": "sad", **{e: "unknown" for e in ("angry", "disgust", "fear", "surprise", "neutral", "contempt")}},
    "The LSTM-on-blendshapes study: happy, sad, and every other emotion as unknown.",
)

VALENCE4 = LabelSet(
    "valence4",
    ("positive", "negative", "awe", "neutral"),
    {
        "happy": "positive",
        "angry": "negative", "disgust": "negative", "sad": "negative", "contempt": "negative",
        "fear": "awe", "surprise": "awe",
        "neutral": "neutral",
    },
    "The emotion-sketch study: positive, negative, awe and neutral.",
)

LABEL_SETS: dict[str, LabelSet] = {ls.name: ls for ls in (EMOTION7, CKPLUS7, HAPPY_SAD_UNKNOWN, VALENCE4)}

#: Training caps of the LSTM study (per original emotion; ``None`` keeps every image).
LSTM_TRAINING_CAPS: dict[str, int | None] = {
    "happy": 4000, "sad": 4000,
    "angry": 1500, "fear": 1500, "surprise": 1500, "neutral": 1500,
    "disgust": None,
}


def get_label_set(name: str | LabelSet) -> LabelSet:
    if isinstance(name, LabelSet):
        return name
    if name not in LABEL_SETS:
        raise KeyError(f"Unknown label set {name!r}; choose one of {sorted(LABEL_SETS)}")
    return LABEL_SETS[name]
