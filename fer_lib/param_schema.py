"""Schemas of ``params/<profile>.yml``: the types every chapter's parameter block must have.

:func:`fer_lib.params.load_params` validates a profile's top level and the requested chapter's block
against these pydantic models before a chapter computes anything, so a typo'd key, a string epoch
count or a missing field fails at the first cell naming the file, chapter, field, value and expected
type — not hours later inside training. Validation only checks: the chapter still gets the YAML values
exactly as written (cache keys are digests of them, so no value may change type on the way).

Rules:

- every block is strict (``"3"`` is not an int, ``1`` is not a bool; an int is a valid float) and
  rejects unknown keys, listing the allowed ones. Builders' ``options`` (keyword arguments that differ
  per builder: ``pixels.build``, ``landmarks.build``, ...) are free-form by design, as are ablation
  variants' names and a search space's parameter names;
- a field the chapter reads with ``P.x`` or ``block["x"]`` is required (``null`` allowed where the chapter
  takes it); one it reads with ``.get`` is optional;
- training blocks are derived from :class:`fer_lib.training.TrainConfig`'s fields and checked by building
  one, so its value rules (optimizers, schedules, losses, ...) apply when the profile is read.
"""
from __future__ import annotations

import typing
from dataclasses import fields as dataclass_fields
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from . import training, video_space
from .labels import LABEL_SETS

#: preprocess.DETECTORS' names and landmarks.NORMALISATIONS' keys, spelled out (as are the detectors'
#: fields below) so that reading a profile imports neither OpenCV nor Keras;
#: tests/test_params_schema.py checks they still agree
DETECTOR_NAMES = ("haar", "dlib_hog", "mediapipe")
NORMALISATIONS = ("none", "centre", "centre+scale", "centre+scale+pose")

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
PerClass = Optional[PositiveInt]  # images kept per class; null: all
Seeds = Annotated[list[int], Field(min_length=1)]


class Block(BaseModel):
    """A parameter block: strict types, unknown keys refused. A default here only marks a key optional (it
    documents the code's default): it is never applied, the chapter gets the YAML as written."""

    model_config = ConfigDict(strict=True, extra="forbid")


class FreeBlock(Block):
    """A block whose listed keys are typed and whose other keys pass (a builder's keyword arguments)."""

    model_config = ConfigDict(strict=True, extra="allow")


Options = dict[str, Any]  # a builder's keyword arguments: free-form by design


# --- training ------------------------------------------------------------------------------------------

TRAIN_FIELDS = tuple(f.name for f in dataclass_fields(training.TrainConfig))


def brief(error: ValueError) -> str:
    """One line for a nested ValidationError (``field: problem; ...``), else the error's text."""
    if hasattr(error, "errors"):
        return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'value'}: {e['msg'].removeprefix('Value error, ')}"
                         for e in error.errors())
    return str(error)


def _check_train_config(values: dict[str, Any]) -> None:
    """TrainConfig's own value rules (optimizer, loss, schedule, ...), on the defaults for absent keys."""
    try:
        training.TrainConfig.from_params({k: v for k, v in values.items() if k in TRAIN_FIELDS or k == "time_budget_min"})
    except (TypeError, ValueError) as error:
        raise ValueError(str(error)) from None


class _TrainBase(Block):
    @model_validator(mode="after")
    def _valid_config(self):
        _check_train_config(self.model_dump(exclude_unset=True))
        return self


# One optional field per TrainConfig field, with its annotation: a field added there is accepted here.
TrainBlock = create_model(
    "TrainBlock", __base__=_TrainBase,
    **{name: (hint, None) for name, hint in typing.get_type_hints(training.TrainConfig).items() if name in TRAIN_FIELDS},
    time_budget_min=(Optional[float], None),  # TrainConfig.from_params converts it to time_budget_s
)
PretrainBlock = create_model("PretrainBlock", __base__=TrainBlock, max_images=(Optional[PositiveInt], None))


def _check_grid(grid: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """keras-tuner grid: TrainConfig field -> non-empty list of values of that field's type."""
    unknown = sorted(set(grid) - set(TRAIN_FIELDS))
    if unknown:
        raise ValueError(f"grid names {unknown}, which are not TrainConfig fields; use some of {sorted(TRAIN_FIELDS)}")
    for name, values in grid.items():
        if not values:
            raise ValueError(f"grid.{name} needs at least one value")
        for value in values:
            try:
                TrainBlock.model_validate({name: value})
            except ValueError as error:
                raise ValueError(f"grid.{name} value {value!r}: {brief(error)}") from None
    return grid


def _check_space_entry(spec: Any) -> Any:
    """A random-search entry: a list of choices, or {min, max[, step, sampling]} (tuning.hyperparameter)."""
    if isinstance(spec, list) and spec:
        return spec
    if isinstance(spec, dict):
        try:
            RangeSpec.model_validate(spec)
        except ValueError as error:
            raise ValueError(brief(error)) from None
        return spec
    raise ValueError(f"give a non-empty list of values or {{min, max[, step, sampling]}}, got {spec!r}")


class RangeSpec(Block):
    min: float
    max: float
    step: Optional[float] = None
    sampling: Literal["linear", "log", "reverse_log"] = "linear"


# --- shared blocks -------------------------------------------------------------------------------------

class Augmentation2D(Block):
    """layers.augmentation's arguments."""

    flip: bool = True
    rotation: Optional[float] = None
    contrast: Optional[Annotated[list[float], Field(min_length=2, max_length=2)]] = None
    noise: Optional[float] = None
    shift: Optional[float] = None
    zoom: Optional[float] = None


class HaarOptions(Block):
    scale_factor: float = 1.1
    min_neighbors: NonNegativeInt = 3
    min_size: NonNegativeInt = 20
    upscale_to: Optional[PositiveInt] = None
    padding: NonNegativeInt = 0


class DlibHogOptions(Block):
    upscale_to: PositiveInt = 80
    upsample: NonNegativeInt = 0
    eyes: bool = False


class MediaPipeOptions(Block):
    input_size: PositiveInt = 192
    padding: NonNegativeInt = 24
    min_confidence: Fraction = 0.3


DETECTOR_OPTIONS = {"haar": HaarOptions, "dlib_hog": DlibHogOptions, "mediapipe": MediaPipeOptions}


class Detectors(Block):
    """Detector name -> its options (preprocess.DETECTORS), in the order given."""

    haar: Optional[HaarOptions] = None
    dlib_hog: Optional[DlibHogOptions] = None
    mediapipe: Optional[MediaPipeOptions] = None


class Preprocessing(Block):
    """preprocess.Preprocessing's fields."""

    detector: Optional[Literal[DETECTOR_NAMES]]
    align: bool = False
    use_clahe: bool = False
    size: PositiveInt = 48
    margin: float = 0.1


class Attempt(Block):
    """face_mesh.Attempt."""

    input_size: PositiveInt = 192
    padding: NonNegativeInt = 24
    clahe: bool = False
    mirror: bool = False


class FaceMesh(Block):
    min_confidence: Fraction
    attempts: Optional[list[Attempt]] = None


class ModelSpec(Block):
    """experiment.run_models' spec: builder, input, its options, training changes, time budget."""

    model: Optional[str] = None
    input: Optional[str] = None
    options: Optional[Options] = None
    training: Optional[TrainBlock] = None
    time_budget_min: Optional[Annotated[float, Field(gt=0)]] = None


Models = Annotated[dict[str, ModelSpec], Field(min_length=1)]


class SeedsAblation(Block):
    model: str
    epochs: PositiveInt
    seeds: Seeds


def _names_in(names, known, what: str, where: str) -> None:
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"{what} names {unknown}, which are not in {where} ({list(known)})")


# --- chapters ------------------------------------------------------------------------------------------

class Data01(Block):
    per_class: PerClass
    grid_per_class: PositiveInt


class Preprocessing02(Block):
    per_class: PerClass
    n_jobs: int
    detectors: Detectors
    augmentation: Augmentation2D


class TuningBlock(Block):
    model: str
    train_per_class: PerClass
    epochs: PositiveInt
    grid: Annotated[dict[str, list[Any]], Field(min_length=1)]

    @field_validator("grid")
    @classmethod
    def _grid(cls, grid):
        return _check_grid(grid)


class Ch3Model(Block):
    """Chapter 3's final models: the label is the builder; the tuned training, a time budget."""

    options: Optional[Options] = None
    time_budget_min: Optional[Annotated[float, Field(gt=0)]] = None


class ConvergedModel(Block):
    model: Optional[str] = None
    options: Optional[Options] = None
    training: Optional[TrainBlock] = None
    time_budget_min: Optional[Annotated[float, Field(gt=0)]] = None


class Tta(Block):
    flip: bool = True
    shift: NonNegativeInt = 2


class ConvergenceGoals(Block):
    """The targets chapter 3's converged models are measured against (PrivateTest accuracy; a speed ratio)."""
    best_single: Fraction                 # the best single 2D model, chosen on PublicTest
    ensemble: Fraction                    # the 2D ensemble with test-time augmentation
    resnet_vgg: Fraction                  # each converged ResNet and VGG row
    resnet_vgg_models: Annotated[list[str], Field(min_length=1)]  # which rows those are
    study_cnn_speedup: PositiveFloat      # study CNN training images/s, tf.data over chapter 3's arrays path


class Converged(Block):
    input: Literal["raw", "preprocessed"]
    augmentation: Augmentation2D
    training: TrainBlock
    models: Annotated[dict[str, ConvergedModel], Field(min_length=1)]
    schedule_comparison: Annotated[list[str], Field(min_length=2, max_length=2)]
    tta: Tta
    ensemble_rounds: PositiveInt
    goals: Optional[ConvergenceGoals] = None

    @model_validator(mode="after")
    def _compared_models_exist(self):
        _names_in(self.schedule_comparison, self.models, "schedule_comparison", "converged.models")
        if self.goals is not None:
            _names_in(self.goals.resnet_vgg_models, self.models, "goals.resnet_vgg_models", "converged.models")
        return self


class PixelsAblation(Block):
    model: str
    train_per_class: PerClass
    epochs: PositiveInt
    seeds: Seeds


class GradcamPerClass(Block):
    per_class: PositiveInt


class Rq1_03(Block):
    train_per_class: PerClass
    eval_per_class: PerClass
    n_jobs: int
    detector_options: Options
    preprocessed: Preprocessing
    augmentation: Augmentation2D
    training: TrainBlock
    ablation: PixelsAblation
    tuning: TuningBlock
    models: Annotated[dict[str, Ch3Model], Field(min_length=1)]
    converged: Converged
    gradcam: GradcamPerClass

    @model_validator(mode="after")
    def _detector_options_fit_the_detector(self):
        if self.preprocessed.detector is not None:  # the options go to the detector preprocessed.detector names
            try:
                DETECTOR_OPTIONS[self.preprocessed.detector].model_validate(self.detector_options)
            except ValueError as error:
                raise ValueError(f"detector_options (for {self.preprocessed.detector}): {brief(error)}") from None
        return self


class NormalisationAblation(SeedsAblation):
    variants: Annotated[list[Literal[NORMALISATIONS]], Field(min_length=1)]


class Landmarks04(Block):
    ensemble: bool
    train_per_class: PerClass
    eval_per_class: PerClass
    n_jobs: int
    face_mesh: FaceMesh
    gallery: NonNegativeInt
    training: TrainBlock
    normalisation_ablation: NormalisationAblation
    smote_ablation: SeedsAblation
    models: Models


class Voxels05(Block):
    ensemble: bool
    train_per_class: PerClass
    eval_per_class: PerClass
    n_jobs: int
    face_mesh: FaceMesh
    normalisation: Literal[NORMALISATIONS]
    k: PositiveInt
    gaussian_sigma: Annotated[float, Field(gt=0)]
    collision_ks: Annotated[list[PositiveInt], Field(min_length=1)]
    collision_sample: PositiveInt
    training: TrainBlock
    models: Models


class Mesh06(Block):
    ensemble: bool
    train_per_class: PerClass
    eval_per_class: PerClass
    n_jobs: int
    face_mesh: FaceMesh
    normalisation: Literal[NORMALISATIONS]
    training: TrainBlock
    models: Models


class FlipRotation(Block):
    """blendshapes.augmented_copies: flip probability, rotation (fraction of 180 degrees)."""

    flip: Fraction = 0.5
    rotation: float = 0.2


class Relevance(Block):
    threshold: Fraction
    min_images: NonNegativeInt


class Search07(Block):
    max_trials: PositiveInt
    epochs: PositiveInt
    patience: NonNegativeInt
    options: Optional[Options] = None
    space: Annotated[dict[str, Any], Field(min_length=1)]

    @field_validator("space")
    @classmethod
    def _entries(cls, space):
        for name, spec in space.items():
            try:
                _check_space_entry(spec)
            except ValueError as error:
                raise ValueError(f"space.{name}: {error}") from None
        return space


class RandomForest(Block):
    n_estimators: PositiveInt = 300
    min_samples_leaf: PositiveInt = 1
    class_weight: Optional[str] = None


class BudgetAblation(Block):
    epochs: PositiveInt
    seeds: Seeds
    time_budget_min: Optional[Annotated[float, Field(gt=0)]]


class Jitter(Block):
    """stream.jittered_frames' arguments."""

    shift: float = 2.0
    rotation: float = 5.0
    brightness: float = 15.0
    noise: float = 4.0


class Streams(Block):
    static: NonNegativeInt
    transitions: NonNegativeInt
    frames: PositiveInt
    smoothing: Fraction
    jitter: Jitter


class Blendshapes07(Block):
    train_per_class: PerClass
    eval_per_class: PerClass
    n_jobs: int
    face_mesh: FaceMesh
    training_caps: Optional[Literal["study"]]
    augmentation: FlipRotation
    relevance: Relevance
    gallery: NonNegativeInt
    training: TrainBlock
    search: Search07
    models: Models
    random_forest: RandomForest
    uncapped_models: list[str]
    ablation: BudgetAblation
    models_7class: Models
    streams: Streams

    @model_validator(mode="after")
    def _uncapped_models_exist(self):
        _names_in(self.uncapped_models, self.models, "uncapped_models", "models")
        return self


class SketchStyle(Block):
    """sketches.SketchStyle's fields."""

    size: PositiveInt = 250
    line_width: PositiveInt = 7
    x_targets: Optional[Annotated[list[float], Field(min_length=2, max_length=2)]] = None
    y_targets: Optional[Annotated[list[float], Field(min_length=2, max_length=2)]] = None
    eye_shift: float = 50.0
    mouth_shift: float = -70.0


class SketchNetworkOptions(FreeBlock):
    input_size: PositiveInt  # every sketch network draws the sketch at its own input size


class SketchNetwork(Block):
    options: SketchNetworkOptions
    pretrain_options: Optional[Options] = None
    finetune_options: Optional[Options] = None
    training: Optional[TrainBlock] = None


class Photo08(Block):
    model: str
    options: Options
    input_size: PositiveInt
    margin: float
    augmentation: Optional[Augmentation2D]


FoldScheme = Annotated[int, Field(ge=2)] | Literal["loso"]


class Folds08(Block):
    jaffe: FoldScheme
    combined: FoldScheme


class Query08(Block):
    n_images: PositiveInt


SKETCH_PROTOCOLS = ("jaffe_loso", "combined_10fold", "query")


class ScratchAblation(Block):
    protocol: Literal["jaffe_loso", "combined_10fold"]
    networks: Annotated[list[str], Field(min_length=1)]


class FerNetwork(Block):
    time_budget_min: Optional[Annotated[float, Field(gt=0)]] = None


class Fer2013Sketches(Block):
    label_sets: Annotated[list[Literal["valence4", "emotion7"]], Field(min_length=1)]
    networks: Annotated[dict[str, FerNetwork], Field(min_length=1)]


class GradcamLayer(Block):
    per_class: PositiveInt
    layer: str


class Sketches08(Block):
    n_jobs: int
    subjects: Optional[PositiveInt]
    train_per_class: PerClass
    eval_per_class: PerClass
    face_mesh: FaceMesh
    detectors: Optional[Detectors]
    crop_size: PositiveInt
    style: SketchStyle
    augmentation: Optional[Augmentation2D]
    inner_validation: Fraction
    fold_store: Optional[str] = None  # a folder under the book keeping each fold's outcome (experiment.cross_validate)
    training: TrainBlock
    pretraining: PretrainBlock
    networks: Annotated[dict[str, SketchNetwork], Field(min_length=1)]
    photo: Photo08
    folds: Folds08
    query: Query08
    protocol_networks: Optional[dict[Literal[SKETCH_PROTOCOLS], Optional[list[str]]]]
    scratch_ablation: ScratchAblation
    fer2013: Fer2013Sketches
    gradcam: GradcamLayer

    @model_validator(mode="after")
    def _networks_named_exist(self):
        for protocol, names in (self.protocol_networks or {}).items():
            _names_in(names or [], self.networks, f"protocol_networks.{protocol}", "networks")
        _names_in(self.scratch_ablation.networks, self.networks, "scratch_ablation.networks", "networks")
        _names_in(self.fer2013.networks, self.networks, "fer2013.networks", "networks")
        _names_in(["vgg11"], self.networks, "the gallery and Grad-CAM", "networks")
        return self


class Clips09(Block):
    clip_length: PositiveInt
    frame_size: PositiveInt


class ClipsChange(Block):
    """An ablation's clips: what it changes of the chapter's."""

    clip_length: Optional[PositiveInt] = None
    frame_size: Optional[PositiveInt] = None


def _video_choice(name: str, hint):
    """The type of one searched choice: one of the study's options (a yes/no choice: a bool), the dropout
    rate any value in [0, 1)."""
    options = video_space.SEARCH_SPACE[name]
    if name == "dropout":
        return Annotated[float, Field(ge=0, lt=1)]
    if all(isinstance(option, bool) for option in options):
        return hint
    return Literal[tuple(options)]


# One optional field per VideoConfig field (the searched choices an ablation may change), typed by the
# study's options: a field added there is checked here.
VideoConfigBlock = create_model(
    "VideoConfigBlock", __base__=Block,
    **{name: (_video_choice(name, hint), None) for name, hint in typing.get_type_hints(video_space.VideoConfig).items()})


class VideoAblation(Block):
    """VideoExperiment.variant's change."""

    config: Optional[VideoConfigBlock] = None
    training: Optional[TrainBlock] = None
    clips: Optional[ClipsChange] = None


class VideoSearch(Block):
    study_name: str
    storage: Optional[str]
    trials: PositiveInt
    folds: Annotated[int, Field(ge=2)]
    pruner_startup_trials: NonNegativeInt
    search_subject_fraction: Annotated[float, Field(gt=0, lt=1)]
    selection_rule: Literal["best", "one_se"]


class Protocols09(Block):
    ten_fold: Annotated[int, Field(ge=2, alias="10fold")]
    loso: Literal["loso"]
    loso_subjects: Optional[PositiveInt] = None
    clip_folds: Optional[Annotated[int, Field(ge=2)]] = None


class Photo09(Block):
    model: str
    options: Options


class Video09(Block):
    subjects: Optional[PositiveInt] = None
    clips: Clips09
    widths: Annotated[list[PositiveInt], Field(min_length=1)]
    inner_validation: Annotated[float, Field(gt=0, lt=1)]
    fold_store: Optional[str] = None
    augmentation: Optional[dict[str, Annotated[list[NonNegativeInt], Field(min_length=3, max_length=3)]]] = None
    training: TrainBlock
    search: VideoSearch
    protocols: Protocols09
    ablations: Optional[dict[str, VideoAblation]]
    photo_2d: Photo09


class Comparison10(Block):
    label_set: Literal[tuple(LABEL_SETS)]
    n_boot: PositiveInt
    fusion_rounds: PositiveInt
    gallery: NonNegativeInt


class Feedback11(Block):
    model: str
    new_domain: Literal["ckplus", "jaffe"]
    correction_subjects: Annotated[float, Field(gt=0, lt=1)]
    ks: Annotated[list[NonNegativeInt], Field(min_length=1)]
    seeds: Seeds
    user: Literal["every", "wrong"]
    goal_k: NonNegativeInt
    replay_ratio: Annotated[float, Field(ge=0)]
    val_fraction: Annotated[float, Field(ge=0, lt=1)]
    freeze_batchnorm: bool
    training: TrainBlock

    @model_validator(mode="after")
    def _ks_hold_the_baseline_and_the_goal(self):
        if 0 not in self.ks or self.goal_k not in self.ks:
            raise ValueError(f"ks {self.ks} must hold 0 (the packaged model) and goal_k {self.goal_k}")
        return self


class Scaling12(Block):
    benchmark: str  # the JSON-lines file benchmarks/scale_out.py appends to, relative to the book's root


class ProfileFile(Block):
    """A profile's top level: merged into every chapter's parameters."""

    profile: Literal[("smoke", "sample", "full")]
    data_dir: Optional[Union[str, Path]]  # (a Path: an override from code)
    seed: int
    zoo_dir: Optional[Union[str, Path]] = None
    model_store: Optional[str] = None  # a folder under the book mirroring every fit (training.model_store)
    chapters: dict[str, Optional[dict[str, Any]]]


#: chapter -> the schema of its block; the chapters a profile may name
CHAPTER_SCHEMAS: dict[str, type[Block]] = {
    "01_data": Data01, "02_preprocessing": Preprocessing02, "03_rq1_2d": Rq1_03, "04_rq2_1_landmarks": Landmarks04,
    "05_rq2_2_voxels": Voxels05, "06_rq2_3_mesh": Mesh06, "07_blendshapes": Blendshapes07, "08_sketches": Sketches08,
    "09_video": Video09, "10_comparison": Comparison10, "11_feedback": Feedback11,
    "12_scaling": Scaling12,
}
