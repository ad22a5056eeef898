"""fer_lib: the helper library of fer-book, a reproducible book on facial emotion recognition.

Chapters hold narrative, parameters, calls and figures; the logic they call lives here:

- :mod:`fer_lib.data` - one :class:`FaceDataset` for FER2013, CK+48 and JAFFE in every layout
- :mod:`fer_lib.labels` - label sets by name (7 emotions, happy/sad/unknown, valence-4, CK+'s 7)
- :mod:`fer_lib.params` - run profiles (smoke, sample, full)
- :mod:`fer_lib.results` - the one metric function and the results-record schema
- :mod:`fer_lib.quality` - duplicate and blank images
- :mod:`fer_lib.runner` - papermill execution and Jupyter Book rendering
- :mod:`fer_lib.progress` - progress bars on the runner's terminal; what a chapter computed or read from caches
- :mod:`fer_lib.tracking` - optional MLflow logging of every results record (``$FER_MLFLOW_URI``)
- :mod:`fer_lib.preprocess` / :mod:`fer_lib.layers` - face detection, alignment, CLAHE; Keras augmentation
- :mod:`fer_lib.pixels` - the 2D representation and its models (study CNN, ResNet50, VGG16)
- :mod:`fer_lib.training` - the one training loop (early stopping, checkpoints, resume, budget, cache)
- :mod:`fer_lib.tuning` - keras-tuner grid and random search over training and model hyper-parameters
- :mod:`fer_lib.gradcam` - Grad-CAM heat maps and their share per face region
- :mod:`fer_lib.experiment` - train → evaluate → record for every chapter; subject-grouped cross-validation; comparison with the best 2D model
- :mod:`fer_lib.face_mesh` - MediaPipe landmarks, blendshapes and head pose for whole datasets (cached)
- :mod:`fer_lib.landmarks` - the 478×3 landmark representation: normalisation, SMOTE, its models
- :mod:`fer_lib.voxels` - voxel grids of the landmarks (occupancy, Gaussian splatting) and 3D-CNNs
- :mod:`fer_lib.mesh` - the face mesh: edges, triangles, edge lengths, normals, graph convolutions
- :mod:`fer_lib.blendshapes` - the 52 blendshapes: augmentation before extraction, relevance rule, LSTM / Dense / MLP / forest
- :mod:`fer_lib.stream` - a model frame by frame over a video or camera; flicker (flip rate, time to settle)
- :mod:`fer_lib.sketches` - dlib-68 emotion sketches (the ES study): landmarks, normalisation, drawing; VGG11 / ResNet50 / CapsNet
- :mod:`fer_lib.capsules` - capsule layers with dynamic routing (CapsNet)
"""
from .data import FaceDataset, LoadReport, load_ckplus, load_dataset, load_fer2013, load_jaffe
from .labels import LABEL_SETS, get_label_set
from .params import load_params
from .results import evaluate, load_records, make_record, write_record

__version__ = "0.1.0"

__all__ = [
    "FaceDataset", "LoadReport", "load_dataset", "load_fer2013", "load_ckplus", "load_jaffe",
    "LABEL_SETS", "get_label_set", "load_params", "evaluate", "make_record", "write_record", "load_records",
]
