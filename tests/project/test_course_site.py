"""The course as a static site (scripts/course_site.py): COURSE.md as the front page, every
notebook as a page, the exercise notebooks in the students' version unless --teacher."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NAMES = ["00_tour", "01_embedding_statistics", "02_twitter_to_uci", "03_cola", "04_compare", "05_your_shift"]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.subprocess,
    pytest.mark.skipif(
        not (importlib.util.find_spec("mkdocs") and importlib.util.find_spec("nbgrader")),
        reason="the site extra (mkdocs-material, mkdocs-jupyter) and nbgrader (dev)",
    ),
]


def _build(out, *extra):
    # --executed: an empty folder, so the pages are the notebooks as committed, whatever was run here
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "course_site.py"),
            "--out",
            str(out),
            "--executed",
            str(out / "none"),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    return out / "site"


def test_the_site_has_the_course_and_every_notebook_without_solutions(tmp_path):
    site = _build(tmp_path / "students")
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "The siftkit course" in index and "What a teacher prepares" in index
    for name in NAMES:
        assert f'href="notebooks/{name}.html"' in index, name
        assert (site / "notebooks" / f"{name}.html").is_file(), name
    # one site: the README, every docs page and the findings beside the course, linked from its nav
    for page in (
        "siftkit.html",
        "docs/studies.html",
        "docs/comparing_fairly.html",
        "docs/methods/smart_sift.html",
        "docs/data.html",
        "results/index.html",
        "results/SUMMARY.html",
    ):
        assert (site / page).is_file(), page
        assert f'href="{page}"' in index, page
    findings = (site / "results" / "index.html").read_text(encoding="utf-8")
    assert 'src="figures/twitter_to_uci_cpu_93e9aef8_curves_by_group.png"' in findings
    assert (site / "results" / "figures" / "twitter_to_uci_cpu_93e9aef8_curves_by_group.png").is_file()
    fair = (site / "docs" / "comparing_fairly.html").read_text(encoding="utf-8")
    assert (
        'href="../results/#the-equal-budget-study-no-regularizer-beats-a-tuned-plain"' in fair
        or 'href="../results/index.html#the-equal-budget-study-no-regularizer-beats-a-tuned-plain"' in fair
    )
    tour = (site / "notebooks" / "00_tour.html").read_text(encoding="utf-8")
    assert "Write it yourself" in tour and "NotImplementedError" in tour
    assert "BEGIN SOLUTION" not in tour and "unbiased=False" not in tour  # exercise 1's solution is not there
    assert "YOUR ANSWER HERE" in tour and "ε ≈ 3e-4" not in tour  # the written answers are the teacher's
    p2 = (site / "notebooks" / "02_twitter_to_uci.html").read_text(encoding="utf-8")
    assert "Write it yourself" in p2 and "NotImplementedError" in p2 and "YOUR ANSWER HERE" in p2
    assert "BEGIN SOLUTION" not in p2 and "clamp_min" not in p2 and "5e-5: 0.857" not in p2


def test_pages_keep_links_the_site_carries_and_name_the_files_it_does_not():
    spec = importlib.util.spec_from_file_location("course_site", REPO / "scripts" / "course_site.py")
    site = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(site)
    text = (
        "See [fair](comparing_fairly.md#the-controls-that-explain-a-gain), [the course](../COURSE.md), "
        "[`siftkit/core/rules.py`](../siftkit/core/rules.py), [a plan](../results/regime_study.plan), "
        "![fig](figures/embedding_statistics.png) and `[not](a link)`.\n\n```\n[x](y.md)\n```\n"
    )
    page, images = site.site_page("docs/studies.md", text, ["docs/comparing_fairly.md", "README.md"])
    assert "[fair](comparing_fairly.md#the-controls-that-explain-a-gain)" in page
    assert "[the course](../index.md)" in page  # COURSE.md is the site's index
    assert "`siftkit/core/rules.py`" in page and "](../siftkit" not in page  # not carried: its name in code
    assert "a plan (`results/regime_study.plan`)" in page
    assert images == ["docs/figures/embedding_statistics.png"] and "![fig](figures/embedding_statistics.png)" in page
    assert "`[not](a link)`" in page and "[x](y.md)" in page  # code is left alone
    carried = site.carried_pages()
    assert carried[0] == "README.md" and "docs/studies.md" in carried and carried[-1] == "results/SUMMARY.md"
    assert set(carried) >= {p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md")}


def test_the_teachers_site_keeps_solutions_and_answers(tmp_path):
    tour = (_build(tmp_path / "teacher", "--teacher") / "notebooks" / "00_tour.html").read_text(encoding="utf-8")
    assert "unbiased" in tour and "ε ≈ 3e-4" in tour
    p2 = (tmp_path / "teacher" / "site" / "notebooks" / "02_twitter_to_uci.html").read_text(encoding="utf-8")
    assert "clamp_min" in p2 and "5e-5: 0.857" in p2
