"""The stale-number check: typed percentages and decimals traced to the record fields or output positions
that gave them at an earlier git revision, on small notebooks and records committed in a temporary repository."""
from __future__ import annotations

import json
import subprocess

import nbformat

from fer_lib import typed_numbers


def notebook(prose: str, table_html: str) -> dict:
    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("display(results_table)")
    code.outputs = [nbformat.v4.new_output("display_data", data={"text/html": table_html, "text/plain": "<Styler>"})]
    nb.cells = [code, nbformat.v4.new_markdown_cell(prose)]
    return nb


def table(accuracy: float, epochs: int) -> str:
    # a Styler's table: its id and CSS carry numbers that change on every execution
    run = accuracy * 1e6
    return (f"<style>#T_{run:.0f}_row0 {{width: 12.5px}}</style><table id='T_{run:.0f}'><tr><td>accuracy</td>"
            f"<td>{accuracy:.4f}</td><td>epochs</td><td>{epochs}</td><td>F1</td><td>0.4812</td></tr></table>")


def git(folder, *args):
    subprocess.run(["git", *args], cwd=folder, check=True, capture_output=True)


PROSE = ("**Reading the results.** The MLP reaches 53.6 % (macro F1 0.48) after 12 epochs; the 1D-CNN 57.1 % "
         "(95 % CI 55.5–58.7). Section `2.5` and {numref}`fig-3` are not numbers.")


def test_typed_numbers_are_the_percentages_and_decimals_outside_code_and_roles():
    found = typed_numbers.typed_numbers(PROSE)
    assert [t.text for t in found] == ["53.6 %", "0.48", "57.1 %", "55.5", "58.7"]  # "95 % CI" names the interval
    assert found[0].percent and found[0].decimals == 1 and not found[1].percent


def test_a_typed_number_that_a_re_execution_changed_is_named_with_its_new_value(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@t"), git(tmp_path, "config", "user.name", "t")
    chapter = tmp_path / "book" / "executed" / "full" / "04_ch.ipynb"
    records = tmp_path / "results" / "full"
    chapter.parent.mkdir(parents=True), records.mkdir(parents=True)
    (records / "04_ch__cnn1d.json").write_text(json.dumps({"accuracy": 0.5712, "accuracy_ci95": [0.5551, 0.5868]}))
    nbformat.write(nbformat.from_dict(notebook(PROSE, table(0.5362, 12))), chapter)
    git(tmp_path, "add", "-A"), git(tmp_path, "commit", "-qm", "first execution")
    assert typed_numbers.stale_numbers(chapter, "HEAD", results=records) == []

    # executed again: the MLP's table now says 54.10 % and 14 epochs, the 1D-CNN's record 57.1 % still
    (records / "04_ch__cnn1d.json").write_text(json.dumps({"accuracy": 0.5708, "accuracy_ci95": [0.5530, 0.5868]}))
    nbformat.write(nbformat.from_dict(notebook(PROSE, table(0.5410, 14))), chapter)
    stale = {item.typed.text: item for item in typed_numbers.stale_numbers(chapter, "HEAD", results=records)}
    assert set(stale) == {"53.6 %", "55.5"}  # 57.1 % and 58.7 still hold; 0.48 is unchanged; epochs are integers
    assert "0.541" in stale["53.6 %"].now[0] and "0.5362" in stale["53.6 %"].places[0]
    assert stale["55.5"].places[0].startswith("04_ch__cnn1d.json.accuracy_ci95[0]") and "0.553" in stale["55.5"].now[0]


def test_without_an_earlier_revision_numbers_nothing_shows_are_listed(tmp_path):
    path = tmp_path / "05_other.ipynb"
    nbformat.write(nbformat.from_dict(notebook("Accuracy 53.6 % and 61.2 %, F1 0.48.", table(0.5362, 12))), path)
    assert [t.text for t in typed_numbers.unmatched(path, "no-such-profile")] == ["61.2 %"]


def test_the_command_line_exits_1_with_stale_numbers_and_2_for_a_missing_notebook(tmp_path, capsys):
    assert typed_numbers.main([str(tmp_path / "missing.ipynb")]) == 2
    path = tmp_path / "05_other.ipynb"
    nbformat.write(nbformat.from_dict(notebook("Accuracy 61.2 %.", table(0.5362, 12))), path)
    assert typed_numbers.main([str(path), "--profile", "no-such-profile"]) == 1
    assert "'61.2 %'" in capsys.readouterr().out


def test_a_chapter_new_since_the_revision_is_checked_against_itself(tmp_path, capsys):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@t"), git(tmp_path, "config", "user.name", "t")
    (tmp_path / "README").write_text("x")
    git(tmp_path, "add", "-A"), git(tmp_path, "commit", "-qm", "before the chapter")
    path = tmp_path / "full" / "12_new.ipynb"
    path.parent.mkdir()
    nbformat.write(nbformat.from_dict(notebook("Accuracy 53.6 % and 61.2 %.", table(0.5362, 12))), path)
    assert typed_numbers.main([str(path), "--since", "HEAD", "--profile", "no-such-profile"]) == 1
    captured = capsys.readouterr()
    assert "not compared" in captured.err and "'61.2 %'" in captured.out and "'53.6 %'" not in captured.out
