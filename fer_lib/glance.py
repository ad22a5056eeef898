"""The intro page's results at a glance, generated from a profile's results records at render time.

:func:`at_a_glance` returns a short MyST markdown text: each representation's best single model on
FER2013 PrivateTest (7 classes) with its accuracy and 95 % interval, macro F1 and face coverage beside the
seed study's published number, then this book's best model under each seed study's own protocol.
``runner.render`` writes it as ``at_a_glance.md`` into the staged book, which ``book/intro.md`` includes,
so the page never carries a number typed by hand.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

import pandas as pd

from . import anchors, comparison, results


@dataclass(frozen=True)
class Protocol:
    """A seed study's own protocol: which records answer it and what the study published."""

    study: str
    what: str  # "{folds}": the record's number of folds
    representation: str
    label_set: str
    dataset: str
    split: str  # a regular expression the records' split must match whole
    theirs: str
    chapter: str
    model_prefix: str | None = None  # only models whose name starts with this compete (None: every single model)


def _pct(value: float, digits: int = 0) -> str:
    """A fraction as the book writes percentages: 0.9756 -> '97.56 %' (digits=2)."""
    return f"{100 * value:.{digits}f} %"


SEED = anchors.SEED_RESULTS

#: the seed studies' own protocols, in the book's order; the numbers they published come from fer_lib.anchors
PROTOCOLS = (
    Protocol("LSTM on blendshapes", "FER2013 PrivateTest, happy / sad / unknown", "blendshapes", "happy_sad_unknown",
             "fer2013", "PrivateTest",
             f"{_pct(SEED['LSTM on blendshapes']['LSTM'][0], 1)}, macro F1 "
             f"{SEED['LSTM on blendshapes']['LSTM macro F1'][0]:.2f}", "07_blendshapes"),
    Protocol("Emotion sketches", "JAFFE + CK+48, 4 classes, {folds} subject-grouped folds", "sketch", "valence4",
             "jaffe+ckplus48", "combined_10fold",
             f"{100 * SEED['Emotion sketches']['query images, lowest network'][0]:.0f}–"
             f"{_pct(SEED['Emotion sketches']['query images, highest network'][0])} "
             "(22 query images of their own data)", "08_sketches"),
    Protocol("Emotion sketches", "JAFFE, 4 classes, leave one subject out", "sketch", "valence4", "jaffe",
             "jaffe_loso", "not reported", "08_sketches"),
    # chapter 9 reports the configuration its search chose (study_cnn3d); its ablations share the records' split
    Protocol("3D-CNN on video", "CK+48 clips, 7 classes, {folds} subject-grouped folds", "video_clip", "ckplus7", "ckplus48",
             r"\d+fold", f"{_pct(SEED['3D-CNN on video']['CK+ 10-fold'][0])} (CK+, 10 folds)", "09_video",
             model_prefix="study_cnn3d"),
    Protocol("3D-CNN on video", "CK+48 clips, 7 classes, leave one subject out", "video_clip", "ckplus7", "ckplus48",
             "loso", f"{_pct(SEED['3D-CNN on video']['CK+ LOSO'][0], 2)} (CK+, LOSO)", "09_video",
             model_prefix="study_cnn3d"),
)


def _accuracy(record: dict) -> str:
    ci = record.get("accuracy_ci95")
    interval = f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci is not None and len(ci) == 2 else ""
    return _pct(record["accuracy"], 1) + interval


def _model(record: dict) -> str:
    # model names are long single words: underscores as break opportunities keep the table inside the page
    return "_<wbr>".join(record["model"].split("_"))


def _chapter_link(chapter: str, text: str, chapters: set[str]) -> str:
    """A link to the chapter when it is in this book (a link to a page left out would not resolve)."""
    return f"{{doc}}`{text} <{chapter}>`" if chapter in chapters else text


def _best(table: pd.DataFrame, protocol: Protocol) -> dict | None:
    """The single model with the best selection-split accuracy under ``protocol`` (never PrivateTest or test
    folds: ``val_accuracy`` is PublicTest, or the held-out training subjects of cross-validated records)."""
    rows = table[(table.representation == protocol.representation) & (table.label_set == protocol.label_set)
                 & (table.dataset == protocol.dataset) & table.split.str.fullmatch(protocol.split)]
    if "members" in rows:
        rows = rows[rows["members"].isna()]
    if protocol.model_prefix:
        rows = rows[rows.model.str.startswith(protocol.model_prefix)]
    rows = rows[rows.val_accuracy.notna()] if "val_accuracy" in rows else rows.iloc[0:0]
    return None if rows.empty else rows.loc[rows.val_accuracy.idxmax()].to_dict()


def at_a_glance(profile: str, chapters: Iterable[str] = ()) -> str:
    """MyST markdown: the results at a glance under ``profile``; ``chapters`` are the pages of the book being
    built (links go only to those)."""
    chapters = set(chapters)
    table = results.load_records(profile)
    if table.empty:
        return (f"*No results are recorded under the `{profile}` profile yet (`results/{profile}/` is empty), so "
                f"there is nothing to show here: execute the chapters (`make book PROFILE={profile}`) and render "
                "again.*\n")
    lines = []
    if profile != "full":
        lines += [f"*These are the **{profile}** profile's numbers: they come from a few hundred images or fewer and "
                  "show only that the method runs. The book's results are the `full` profile's.*", ""]
    best, missing = comparison.best_models(profile, label_set="emotion7")
    if best:
        lines += [f"Each representation's best single model, chosen on PublicTest (accuracy with its bootstrap 95 % "
                  f"interval; coverage: the share of faces the representation could read); "
                  f"{_chapter_link('10_comparison', 'chapter 10', chapters)} compares them on the same faces.",
                  "",
                  "```{table} FER2013 PrivateTest, 7 classes: each representation's best single model and the seed "
                  "study's number",
                  ":name: tab-glance-fer2013",
                  "",
                  "| representation (its best model) | accuracy [95 % CI] | macro F1 | coverage | the seed's (theirs) |",
                  "|---|---|---|---|---|"]
        for representation, record in best.items():
            study, result = comparison.SEED_OF.get(representation, (None, None))
            theirs = f"{_pct(SEED[study][result][0])} ({study}, {result})" if study else "not measured on FER2013"
            name = comparison.REPRESENTATIONS.get(representation, representation)
            lines.append(f"| {_chapter_link(record['chapter'], name, chapters)} ({_model(record)}) | "
                         f"{_accuracy(record)} | {record['macro_f1']:.3f} | {_pct(record['coverage'], 1)} | {theirs} |")
        lines.append("```")
        if missing:
            lines += ["", "Not recorded under this profile: "
                      + "; ".join(f"{comparison.REPRESENTATIONS.get(rep, rep)} ({why})" for rep, why in missing.items())
                      + "."]
        lines.append("")
    own = [(protocol, _best(table, protocol)) for protocol in PROTOCOLS]
    own = [(protocol, record) for protocol, record in own if record is not None]
    if own:
        lines += ["Under each seed study's own protocol, this book's best single model, chosen on its selection data "
                  "(PublicTest, or held-out training subjects in cross-validation), beside the study's published number "
                  "(which comes from the study's own data and runs).",
                  "",
                  "```{table} The seed studies' own protocols: this book's best single model and the study's number",
                  ":name: tab-glance-seeds",
                  "",
                  "| seed study: protocol (this book's best model) | accuracy [95 % CI] | macro F1 | theirs |",
                  "|---|---|---|---|"]
        for protocol, record in own:
            folds = record.get("n_folds")  # a float in the records' table (NaN for records without folds)
            what = protocol.what.format(folds=int(folds) if folds == folds and folds is not None else "")
            lines.append(f"| {_chapter_link(protocol.chapter, protocol.study, chapters)}: {what} "
                         f"({_model(record)}) | {_accuracy(record)} | {record['macro_f1']:.3f} | {protocol.theirs} |")
        lines += ["```", ""]
    if not best and not own:
        lines.append(f"*The records under `results/{profile}/` answer none of the questions summarised here yet.*")
    return "\n".join(lines) + "\n"
