"""Profiles are validated when a chapter loads them: every committed profile passes, and a damaged copy
fails at load time naming the file, chapter, field, value and expected type."""
from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml

from fer_lib import param_schema, params, runner, training
from fer_lib.params import PROFILES, ParamsError, load_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("profile", PROFILES)
def test_every_chapter_of_every_profile_validates(profile):
    for chapter in param_schema.CHAPTER_SCHEMAS:
        P = load_params(profile, chapter=chapter)
        assert P.chapter == chapter and P.profile == profile


@pytest.mark.parametrize("profile", PROFILES)
def test_profiles_read_exactly_as_before(profile):
    """The loader's extra float rule changes no committed value (cache keys are digests of them)."""
    text = (ROOT / "params" / f"{profile}.yml").read_text()
    new, old = params.read_yaml(text), yaml.safe_load(text)
    assert new == old and repr(new) == repr(old)  # same values and same types (1 stays 1, 1.0 stays 1.0)


def test_numbers_with_an_exponent_are_floats():
    values = params.read_yaml("a: 1e-3\nb: 5E4\nc: 1.0e3\nd: -2e+2\ne: .5e1\nf: 10\ng: '1e-3'\nh: 1e\ni: e5\nj: 0.5")
    assert values == {"a": 0.001, "b": 50000.0, "c": 1000.0, "d": -200.0, "e": 5.0, "f": 10, "g": "1e-3",
                      "h": "1e", "i": "e5", "j": 0.5}
    assert type(values["f"]) is int and type(values["a"]) is float


@pytest.fixture
def damaged(tmp_path, monkeypatch):
    """A book root in tmp_path whose params/smoke.yml is the committed one with ``old`` replaced by ``new``."""
    (tmp_path / "params").mkdir()
    (tmp_path / "_config.yml").write_text("title: damaged\n")
    (tmp_path / "book").mkdir()
    for chapter in param_schema.CHAPTER_SCHEMAS:  # the runner resolves chapter names from book/NN_*.py
        (tmp_path / "book" / f"{chapter}.py").write_text("")
    monkeypatch.setenv("FER_BOOK_ROOT", str(tmp_path))
    text = (ROOT / "params" / "smoke.yml").read_text()

    def write(*replacements):
        changed = text
        for old, new in replacements:
            assert changed.count(old) >= 1, old
            changed = changed.replace(old, new, 1)
        (tmp_path / "params" / "smoke.yml").write_text(changed)
    return write


TRAINING_03 = "training: {optimizer: sgd, learning_rate: 0.01, momentum: 0.9, weight_decay: 0.0001,\n               batch_size: 16, epochs: 1,"


def test_a_string_epoch_count_names_file_chapter_field_value_and_type(damaged):
    damaged((TRAINING_03, TRAINING_03.replace("epochs: 1,", "epochs: '1',")))
    with pytest.raises(ParamsError) as error:
        load_params("smoke", chapter="03_rq1_2d")
    message = str(error.value)
    assert "params/smoke.yml" in message and "chapter 03_rq1_2d" in message
    assert "training.epochs = '1': expected a valid integer" in message
    load_params("smoke", chapter="01_data")  # the other chapters' blocks still load


def test_a_learning_rate_written_1e_3_is_a_float_that_builds_the_optimizer(damaged):
    damaged((TRAINING_03, TRAINING_03.replace("learning_rate: 0.01", "learning_rate: 1e-3")))
    P = load_params("smoke", chapter="03_rq1_2d")
    assert P.training["learning_rate"] == 0.001
    assert training.TrainConfig.from_params(P.training).learning_rate == 0.001


def test_a_typo_lists_the_allowed_keys_and_the_missing_one(damaged):
    damaged(("grid_per_class: 3", "grid_per_clas: 3"))
    with pytest.raises(ParamsError, match=r"grid_per_clas: unknown key; allowed keys are \['grid_per_class', "
                                          r"'per_class'\]") as error:
        load_params("smoke", chapter="01_data")
    assert "grid_per_class: missing" in str(error.value)


@pytest.mark.parametrize("old, new, chapter, expected", [
    # a nested train block of one model, and TrainConfig's own value rules
    ("vgg11_w16_plateau: {model: vgg, options: {depth: 11, width: 4},\n                            training: {learning_rate: 0.01",
     "vgg11_w16_plateau: {model: vgg, options: {depth: 11, width: 4},\n                            training: {learning_rate: fast",
     "03_rq1_2d", "converged.models.vgg11_w16_plateau.training.learning_rate = 'fast': expected a valid number"),
    ("training: {optimizer: adamw, learning_rate: 0.001, weight_decay: 0.0001, batch_size: 16, epochs: 1,\n               patience: 12",
     "training: {optimizer: adamax, learning_rate: 0.001, weight_decay: 0.0001, batch_size: 16, epochs: 1,\n               patience: 12",
     "04_rq2_1_landmarks", "training: optimizer 'adamax' is not one of"),
    ("study_cnn: {options: {width: 8}, time_budget_min: null}", "study_cnn: {options: {width: 8}, time_budget: 5}",
     "03_rq1_2d", "models.study_cnn.time_budget: unknown key; allowed keys are ['options', 'time_budget_min']"),
    ("folds: {jaffe: loso, combined: 2}", "folds: {jaffe: leave_one_out, combined: 2}",
     "08_sketches", "folds.jaffe = 'leave_one_out': expected a valid integer or 'loso'"),
    ("scratch_ablation: {protocol: combined_10fold, networks: [vgg11]}",
     "scratch_ablation: {protocol: combined_10fold, networks: [vgg13]}",
     "08_sketches", "scratch_ablation.networks names ['vgg13'], which are not in networks"),
    ("grid: {batch_size: [16], learning_rate: [0.01, 0.003]", "grid: {batch_size: [16], learning_rte: [0.01, 0.003]",
     "03_rq1_2d", "grid names ['learning_rte'], which are not TrainConfig fields"),
    ("selection_rule: ", "selection_rule: Best  # ", "09_video", "search.selection_rule = 'Best': expected 'best' or 'one_se'"),
    ("ablations:\n      temporal_size_1: {config: {temporal_kernel: 1}}",
     "ablations:\n      temporal_size_1: {config: {temporal_kernl: 1}}", "09_video",
     "ablations.temporal_size_1.config.temporal_kernl: unknown key"),
    # a searched choice takes one of the study's options (video_space.SEARCH_SPACE), the dropout [0, 1)
    ("ablations:\n      temporal_size_1: {config: {temporal_kernel: 1}}",
     "ablations:\n      temporal_size_1: {config: {temporal_kernel: 2}}", "09_video",
     "ablations.temporal_size_1.config.temporal_kernel = 2: expected 1, 3, 5, 7 or 9"),
    ("ablations:\n      temporal_size_1: {config: {temporal_kernel: 1}}",
     "ablations:\n      temporal_size_1: {config: {activation: gelu}}", "09_video",
     "ablations.temporal_size_1.config.activation = 'gelu': expected 'relu', 'elu', 'prelu', 'leaky_relu' or 'mish'"),
    ("ablations:\n      temporal_size_1: {config: {temporal_kernel: 1}}",
     "ablations:\n      temporal_size_1: {config: {dropout: 1.0}}", "09_video",
     "ablations.temporal_size_1.config.dropout = 1.0: expected less than 1"),
    ("ensemble: true", "ensemble: 'yes'", "04_rq2_1_landmarks", "ensemble = 'yes': expected a valid boolean"),
    ("k: 16 ", "k: 16.0 ", "05_rq2_2_voxels", "k = 16.0: expected a valid integer"),
])
def test_damaged_blocks_are_refused_with_what_was_expected(damaged, old, new, chapter, expected):
    damaged((old, new))
    with pytest.raises(ParamsError) as error:
        load_params("smoke", chapter=chapter)
    assert expected in str(error.value)
    assert f"params/smoke.yml, chapter {chapter}" in str(error.value)


def test_unknown_chapters_fail_before_anything_is_read(damaged, monkeypatch):
    with pytest.raises(ParamsError, match=r"Unknown chapter '03_rq1'; chapters are \['01_data'"):
        load_params("smoke", chapter="03_rq1")
    damaged(("  01_data:", "  01_dta:"))
    with pytest.raises(ParamsError, match=r"unknown chapter block\(s\) \['01_dta'\]"):
        load_params("smoke", chapter="02_preprocessing")


def test_overrides_are_checked_where_they_land(damaged):
    damaged()
    assert load_params("smoke", chapter="01_data", data_dir=Path("/elsewhere")).data_dir == Path("/elsewhere")
    assert load_params("smoke", chapter="01_data", per_class=2).per_class == 2
    with pytest.raises(ParamsError, match=r"seed = 'zero': expected a valid integer"):
        load_params("smoke", chapter="01_data", seed="zero")
    with pytest.raises(ParamsError, match=r"override\(s\) \['per_clas'\].*overridable: .*'per_class'"):
        load_params("smoke", chapter="01_data", per_clas=2)


def test_runner_checks_every_chapter_before_running_any(damaged, monkeypatch, capsys):
    ran = []
    monkeypatch.setattr(runner, "execute", lambda chapter, *args, **kwargs: ran.append(chapter))
    with pytest.raises(SystemExit, match="No single chapter matches '99'"):
        runner.main(["execute", "--profile", "smoke", "--chapter", "01", "--chapter", "99"])
    damaged(("selection_rule: ", "selection_rule: Best  # "))  # chapter 9's block, checked before chapter 1 runs
    with pytest.raises(SystemExit, match=r"(?s)chapter 09_video.*search.selection_rule = 'Best'"):
        runner.main(["execute", "--profile", "smoke", "--chapter", "01", "--chapter", "09"])
    assert ran == []
    damaged()
    runner.main(["execute", "--profile", "smoke", "--chapter", "01", "--chapter", "09"])
    assert ran == ["01_data", "09_video"]


def test_the_schema_agrees_with_the_code_it_describes():
    """Lists and fields spelled out in param_schema (to keep Keras and OpenCV out of load_params) still match."""
    from fer_lib import blendshapes, face_mesh, landmarks, layers, preprocess, sketches, stream

    def arguments(function, *leave_out):
        return set(inspect.signature(function).parameters) - {"self", *leave_out}

    assert set(runner.chapters()) == set(param_schema.CHAPTER_SCHEMAS)
    assert set(preprocess.DETECTORS) == set(param_schema.DETECTOR_NAMES) == set(param_schema.Detectors.model_fields)
    for name, options in param_schema.DETECTOR_OPTIONS.items():
        assert set(options.model_fields) == arguments(preprocess.DETECTORS[name].__init__), name
    assert set(landmarks.NORMALISATIONS) == set(param_schema.NORMALISATIONS)
    assert set(param_schema.Attempt.model_fields) == set(face_mesh.Attempt.__dataclass_fields__)
    assert set(param_schema.SketchStyle.model_fields) == set(sketches.SketchStyle.__dataclass_fields__)
    assert set(param_schema.Preprocessing.model_fields) == set(preprocess.Preprocessing.__dataclass_fields__)
    assert set(param_schema.Augmentation2D.model_fields) == arguments(layers.augmentation, "seed")
    assert set(param_schema.Jitter.model_fields) == arguments(stream.jittered_frames, "image", "n_frames", "rng")
    assert set(param_schema.RandomForest.model_fields) == arguments(blendshapes.random_forest, "n_jobs", "seed")
    assert set(param_schema.FlipRotation.model_fields) == arguments(blendshapes.augmented_copies, "dataset", "seed")
    assert set(param_schema.TrainBlock.model_fields) == set(training.TrainConfig.__dataclass_fields__) | {"time_budget_min"}


def test_every_option_the_video_search_draws_is_a_valid_ablation():
    """The schema's video block is built from video_space: each option of the study's search space passes."""
    from fer_lib import video_space

    for name, options in video_space.SEARCH_SPACE.items():
        for value in (options if isinstance(options, list) else list(options)):
            param_schema.VideoConfigBlock.model_validate({name: value})
