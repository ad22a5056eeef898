"""Where things live: the repository root, data, vendored models, results and executed chapters.

Every path the chapters use is resolved here, so a reader can move the data or the models with one
environment variable instead of editing notebooks.
"""
from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent

#: Environment variables a reader may set.
DATA_ENV = "FER_DATA_DIR"
MODELS_ENV = "FER_MODELS_DIR"
ROOT_ENV = "FER_BOOK_ROOT"

#: SHA-256 of the vendored MediaPipe Face Landmarker v2 bundle (same as ../shared/SHA256SUMS).
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"


def repo_root() -> Path:
    """The book's root folder (the one holding ``params/`` and ``_config.yml``).

    Looked up from ``$FER_BOOK_ROOT``, then upwards from the working directory (a notebook opened
    in ``book/`` finds it), then beside the package (an editable install).
    """
    if os.environ.get(ROOT_ENV):
        return Path(os.environ[ROOT_ENV]).resolve()
    for folder in [Path.cwd(), *Path.cwd().parents, PACKAGE_DIR.parent]:
        if (folder / "params").is_dir() and (folder / "_config.yml").is_file():
            return folder
    raise FileNotFoundError(
        "Cannot find the fer-book root (a folder with params/ and _config.yml) above "
        f"{Path.cwd()}; run from inside the repository or set {ROOT_ENV}."
    )


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """Data location: the explicit parameter, else ``$FER_DATA_DIR``, else ``<root>/data``.

    A relative parameter is taken relative to the repository root, so profile files can say
    ``data/sample`` whatever the working directory is.
    """
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        return path if path.is_absolute() else repo_root() / path
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser().resolve()
    return repo_root() / "data"


def sample_data_dir() -> Path:
    """The small stratified sample committed with the book (``data/sample``)."""
    return repo_root() / "data" / "sample"


def models_dir() -> Path:
    """Folder of model files: ``$FER_MODELS_DIR`` if set, else the copies vendored in the package."""
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV]).expanduser().resolve()
    return PACKAGE_DIR / "models"


def face_landmarker_path() -> Path:
    """MediaPipe's ``face_landmarker.task`` (landmarks + blendshapes); no wheel ships it."""
    path = models_dir() / "face_landmarker.task"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing. It is vendored in fer_lib/models/ (Apache-2.0, see NOTICE there); "
            f"if you set ${MODELS_ENV}, put face_landmarker.task in that folder. MediaPipe publishes "
            "it as the Face Landmarker v2 model bundle."
        )
    return path


def dlib_shape_predictor_path() -> Path:
    """dlib's 68-point shape predictor, shipped by the ``face_recognition_models`` package (CC0)."""
    override = models_dir() / "shape_predictor_68_face_landmarks.dat"
    if override.is_file():
        return override
    try:
        import face_recognition_models
    except ImportError as err:  # pragma: no cover - the pinned stack installs it
        raise FileNotFoundError(
            "dlib's 68-point model needs the 'face_recognition_models' package: "
            "pip install face_recognition_models"
        ) from err
    return Path(face_recognition_models.pose_predictor_model_location())


def sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def results_dir(profile: str) -> Path:
    return repo_root() / "results" / profile


def book_folder(P, key: str) -> Path | None:
    """The folder a profile names under ``key`` (a path relative to the book's root, such as
    ``model_store`` or a chapter's ``fold_store``), or None when the profile leaves it unset."""
    folder = P.get(key)
    return repo_root() / folder if folder else None


def executed_dir(profile: str) -> Path:
    """Where papermill writes a profile's executed notebooks (``full`` ones are committed)."""
    return repo_root() / "book" / "executed" / profile


@contextmanager
def written_atomically(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` to write to; on success it is renamed over ``path``.

    A cache file is then either absent or whole: an interrupted run never leaves half a file that a later
    run would take for a finished one, and two processes filling the same cache (two chapters, or two
    test workers) never read each other's half-written file — the last rename wins, with equal content.
    The temporary name keeps no suffix of ``path``: pass numpy an open file (``np.savez`` adds ``.npz``
    to a name without it)."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
