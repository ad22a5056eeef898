"""The seed studies' published numbers: anchors to reproduce and beat, always labelled as theirs.

Nothing here is measured by this book; chapters print these beside their own measured results.
"""
from __future__ import annotations

import pandas as pd

#: study -> what was measured -> (value, what it is)
SEED_RESULTS: dict[str, dict[str, tuple[float, str]]] = {
    "3DFER": {
        "2D CNN": (0.62, "accuracy, FER2013, 7 classes"),
        "VGG16 (transfer)": (0.67, "accuracy, FER2013, 7 classes"),
        "landmark MLP": (0.51, "accuracy, MediaPipe 478x3 landmarks"),
        "landmark 1D-CNN": (0.55, "accuracy, MediaPipe 478x3 landmarks"),
        "voxel 3D-CNN": (0.43, "accuracy, voxel grid of landmarks"),
        "mesh-distance CNN": (0.57, "accuracy, mesh edge lengths"),
        "faces lost by MediaPipe": (0.07, "fraction of FER2013 without a detected face"),
    },
    "LSTM on blendshapes": {
        "LSTM": (0.720, "accuracy, FER2013 happy/sad/unknown"),
        "LSTM macro F1": (0.63, "F1, FER2013 happy/sad/unknown"),
        "blendshapes kept": (27, "of 52: score > 0.4 in more than 100 training images"),
        "training images after augmentation": (20000, "more than this many (originals + augmented copies)"),
        "random forest, 7 classes": (0.51, "accuracy, FER2013 7 classes, 52 blendshapes (a reported baseline)"),
    },
    "3D-CNN on video": {
        "CK+ LOSO": (0.9756, "accuracy, leave-one-subject-out"),
        "CK+ 10-fold": (1.00, "accuracy, 10-fold cross-validation"),
        "Oulu-CASIA 10-fold": (0.8417, "accuracy, 10-fold cross-validation"),
        "trials": (800, "Optuna TPE trials, more than this many"),
    },
    # Not one of the five seed studies: the small published FER2013 model chapter 3 measures itself against.
    "mini-Xception": {
        "FER2013 test": (0.66, "accuracy, FER2013 test split, 7 classes (Arriaga et al., 2017)"),
    },
    "Emotion sketches": {
        "time per sketch": (3.1, "seconds to make one dlib-68 sketch"),
        "query images, lowest network": (0.86, "accuracy on 22 query images of their own data, 4 classes"),
        "query images, highest network": (0.91, "accuracy on 22 query images of their own data, 4 classes"),
        "CapsNet, query images": (18 / 22, "18 of 22 query images right, 4 classes"),
    },
}

#: The emotion-sketch study's Table I: seconds per sketch and stage (Java + OpenCV; detection is part of
#: "landmarks", "processing" is the normalisation).
SKETCH_STUDY_TABLE_I_S = {"landmarks (with detection)": 2.0, "processing (normalisation)": 0.9, "drawing": 0.3,
                          "total": 3.1}

#: The LSTM study's Table 3: FER2013 training images MediaPipe could not read, per class.
LSTM_STUDY_UNREAD_PER_CLASS = {
    "angry": 597, "disgust": 72, "fear": 616, "happy": 377, "sad": 835, "surprise": 239, "neutral": 261,
}

#: The 3DFER report's Table 1 (FER2013 class percentages). Its figures are not in the sources this book
#: was built from; fill them in (class -> percent) and chapter 01 shows them beside its own counts.
THREEDFER_TABLE1_PERCENT: dict[str, float] = {}


def anchors_table() -> pd.DataFrame:
    """All anchors as one table (study, result, value, meaning)."""
    rows = [
        {"study": study, "result": name, "value": value, "meaning": meaning}
        for study, results in SEED_RESULTS.items()
        for name, (value, meaning) in results.items()
    ]
    return pd.DataFrame(rows)
