"""The sweep's evidence in words and Markdown: every number from the JSON, the tables'
rows rendered as they are, the report built from the rows."""

import html
import json
import re

from stimulative.analysis.evidence import cells_table, differences_table
from stimulative.reporting.evidence_text import cells_table_markdown, conclusion_markdown, differences_table_markdown
from stimulative.reporting.report import write_report
from tests.analysis.test_evidence import sample_evidence


def test_conclusion_numbers_come_from_the_json():
    ev = sample_evidence()
    text = conclusion_markdown(ev)
    v = ev["verdict"]["recalibrated"]
    st = v["st_full_better"][0]
    assert f"{st['mean']:+.2f} [{st['ci95'][0]:+.2f}, {st['ci95'][1]:+.2f}]" in text
    assert "Of 2 ST cells, 1 beat CT beyond noise" in text
    pooled = v["pooled"]["ST vs SD | all | sub_worst"]
    assert f"worst sub-network {pooled['mean']:+.2f}" in text
    # every signed number in the text is one of the JSON's numbers, rounded
    numbers = set()

    def collect(x):
        if isinstance(x, dict):
            for y in x.values():
                collect(y)
        elif isinstance(x, list):
            for y in x:
                collect(y)
        elif isinstance(x, float):
            numbers.add(f"{x:+.2f}")

    collect(ev)
    for n in re.findall(r"[+-]\d+\.\d\d", text):
        assert n in numbers, n


def test_markdown_tables_are_the_rows():
    ev = sample_evidence()
    for markdown, (header, rows) in (
        (cells_table_markdown(ev), cells_table(ev)),
        (differences_table_markdown(ev, metric="sub_worst"), differences_table(ev, metric="sub_worst")),
    ):
        lines = markdown.splitlines()
        assert markdown.endswith(" |\n") and len(lines) == 2 + len(rows)
        assert lines[0] == "| " + " | ".join(header) + " |" and lines[1] == "|" + "---|" * len(header)
        assert [line[2:-2].split(" | ") for line in lines[2:]] == rows


def test_report_of_a_sweep_holds_the_conclusion_and_the_tables(tmp_path):
    ev = sample_evidence()
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "evidence.json").write_text(json.dumps(ev))
    write_report([str(tmp_path / "sweep")], str(tmp_path / "report.md"))
    md = (tmp_path / "report.md").read_text()
    for paragraph in conclusion_markdown(ev).split("\n\n"):
        assert paragraph.strip() in md
    assert cells_table_markdown(ev) in md and differences_table_markdown(ev) in md
    page = (tmp_path / "report.html").read_text()
    _, rows = cells_table(ev)
    assert "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in rows[0]) + "</tr>" in page
