"""The course as a static site: COURSE.md as the front page, every notebook as a page (with its
outputs when an executed copy exists), the README, the pages under docs/ and the findings
(results/README.md, results/SUMMARY.md), in MkDocs Material with mkdocs-jupyter.

    python scripts/course_site.py                  # build/course_site/site/index.html
    python scripts/course_site.py --execute        # first run every notebook on params/lab.yaml
    python scripts/course_site.py --teacher        # 00's and 05's solutions and answers kept

Students see the students' version of the exercise notebooks (00, 05): nbgrader's
ClearSolutions removes what lies between the solution markers, as for the copies handed out
(COURSE.md). `--execute` runs each page's notebook with papermill on the lab preset into
`notebooks/executed/site/` (the students' version for 00 and 05, so their checks report
"not written yet"); later builds reuse those outputs. Without an executed copy a page shows
the notebook's code and text only. Needs the `site` extra (MkDocs Material, mkdocs-jupyter) and,
for the students' version, nbgrader (`dev`).

Every Markdown page keeps its path in the repository (docs/studies.md is the site's
docs/studies.html), so the links between pages are the repository's own; COURSE.md becomes
index.md and README.md siftkit.md. A link to a file the site does not carry (source, a plan, a
folder) becomes the file's name in code, and the images the pages show are copied beside them.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["00_tour", "01_embedding_statistics", "02_twitter_to_uci", "03_cola", "04_compare", "05_your_shift"]
EXERCISES = ["00_tour", "02_twitter_to_uci", "05_your_shift"]  # the notebooks with solution markers
EXECUTED = REPO / "notebooks" / "executed" / "site"
# Each notebook's parameters for the site's executed copy (the lab preset where it trains).
SITE_PARAMETERS = {
    "00_tour": {},
    "01_embedding_statistics": {"runs_glob": "runs/site/02_twitter_to_uci/*/results.json"},
    "02_twitter_to_uci": {
        "algo": "sift",
        "params_file": "params/lab.yaml",
        "output_dir": "runs/site/02_twitter_to_uci/sift-seed42",
        "overwrite": True,
    },
    "03_cola": {
        "algo": "sift",
        "params_file": "params/lab.yaml",
        "output_dir": "runs/site/03_cola/sift-seed42",
        "overwrite": True,
    },
    "04_compare": {"results_glob": "runs/site/**/results.json", "output_dir": "runs/site/04_compare"},
    "05_your_shift": {"params_file": "params/lab.yaml", "output_dir": "runs/site/05_your_shift", "overwrite": True},
}
# The Markdown pages besides the course, in the site's order (any other page under docs/ follows
# them), each at its path in the repository; README.md is staged as siftkit.md (MkDocs would take
# a README.md for the index).
GUIDES = [
    "docs/notebooks.md",
    "docs/studies.md",
    "docs/comparing_fairly.md",
    "docs/your_shift.md",
    "docs/tracking_and_clusters.md",
    "docs/usage_trainer_and_multigpu.md",
    "docs/data.md",
    "docs/robustness.md",
    "docs/config.md",
]
METHODS = [
    "docs/methods/smart_sift.md",
    "docs/methods/freelb.md",
    "docs/methods/pgd.md",
    "docs/methods/freeat.md",
    "docs/methods/vat.md",
    "docs/methods/r3f.md",
    "docs/methods/alum.md",
    "docs/methods/rdrop.md",
    "docs/methods/ood.md",
]
RESULTS = ["results/README.md", "results/SUMMARY.md"]
STAGED_AS = {"COURSE.md": "index.md", "README.md": "siftkit.md"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif")
STUDENT_PREPROCESSOR = [
    "--ClearSolutions.enforce_metadata=False",
    '--Exporter.preprocessors=["nbgrader.preprocessors.ClearSolutions"]',
]

MKDOCS_YML = """site_name: siftkit · the course
site_description: Plain, SMART and SiFT fine-tuning, measured — a course in notebooks
docs_dir: docs
site_dir: site
use_directory_urls: false
theme:
  name: material
  features: [navigation.sections, navigation.top, content.code.copy]
  palette: {{primary: indigo}}
markdown_extensions: [tables, admonition, toc]
plugins:
  - search
  - mkdocs-jupyter:
      execute: false
      include_source: true
      ignore_h1_titles: true
nav:
  - Course: index.md
{pages}
  - siftkit: siftkit.md
  - Guides:
{guides}
  - Methods:
{methods}
  - Results:
{results}
"""


def _jupyter() -> str:
    found = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    return found or "jupyter"


def students_version(source: Path, out_dir: Path) -> Path:
    """nbgrader's ClearSolutions on `source` (the command COURSE.md gives teachers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [_jupyter(), "nbconvert", "--to", "notebook", *STUDENT_PREPROCESSOR, "--output-dir", str(out_dir), str(source)],
        check=True,
        capture_output=True,
        text=True,
    )
    return out_dir / source.name


def execute(name: str, source: Path, executed: Path = EXECUTED) -> Path:
    """Run `source` with papermill on the site's parameters into `executed` (notebooks/executed/site/)."""
    import papermill

    executed.mkdir(parents=True, exist_ok=True)
    out = executed / f"{name}.ipynb"
    papermill.execute_notebook(
        str(source),
        str(out),
        parameters=SITE_PARAMETERS[name],
        cwd=str(REPO),
        kernel_name="python3",
        progress_bar=False,
    )
    return out


def front_page(text: str) -> str:
    """COURSE.md for the site: its links to ``notebooks/<name>.ipynb`` are the site's pages
    already (the same relative path); a link to another file of the repository becomes its
    name in code, unless the site carries that page."""
    return site_page("COURSE.md", text, carried_pages())[0]


def carried_pages() -> list[str]:
    """Every Markdown page the site carries besides the course's front page, repository paths in
    the site's order: README, the guides, the methods, any other page under docs/, the results."""
    listed = ["README.md", *GUIDES, *METHODS, *RESULTS]
    others = sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").rglob("*.md"))
    ordered = listed[: 1 + len(GUIDES) + len(METHODS)] + [p for p in others if p not in listed] + RESULTS
    return [p for p in ordered if (REPO / p).is_file()]


def _staged(path: str) -> str:
    return STAGED_AS.get(path, path)


# One scan, left to right: a fenced block or a code span is left alone (a `[x](y)` in code is no
# link); a link's label may hold code spans.
_SCAN = re.compile(
    r"(?P<fence>^```.*?^```[^\n]*$)|(?P<link>(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\))"
    r"|(?P<code>`[^`\n]+`)",
    re.S | re.M,
)


def site_page(path: str, text: str, carried: list[str]) -> tuple[str, list[str]]:
    """The page at repository path `path` as the site shows it, and the images it needs copied
    (repository paths). Links to pages the site carries (and to notebooks) keep their target,
    moved to where the site stages it; other repository files become their name in code."""
    here = Path(path).parent
    site_pages = {"COURSE.md", *carried}
    images: list[str] = []

    def link(m: re.Match) -> str:
        if not m.group("link"):
            return m.group(0)
        bang, label, href = m.group(3, 4, 5)
        if re.match(r"[a-z][a-z0-9+.-]*:|#", href):
            return m.group(0)
        target, hash_, anchor = href.partition("#")
        resolved = Path(os.path.normpath(here / target)).as_posix()
        if resolved in site_pages or (resolved.startswith("notebooks/") and resolved.endswith(".ipynb")):
            new = os.path.relpath(_staged(resolved), Path(_staged(path)).parent) + hash_ + anchor
            return f"{bang}[{label}]({Path(new).as_posix()})"
        if resolved.lower().endswith(IMAGE_SUFFIXES) and (REPO / resolved).is_file():
            images.append(resolved)
            return m.group(0)
        if label.strip("`").rstrip("/") in (target.rstrip("/"), resolved):
            return f"`{resolved}`"
        return f"{label} (`{resolved}`)"

    return _SCAN.sub(link, text), images


def build(out: Path, *, teacher: bool = False, run_notebooks: bool = False, executed: Path = EXECUTED) -> Path:
    """Stage the pages in `out`/docs and run `mkdocs build`; returns the site's index.html."""
    docs = out / "docs"
    if docs.exists():
        shutil.rmtree(docs)
    (docs / "notebooks").mkdir(parents=True)
    (docs / "index.md").write_text(front_page((REPO / "COURSE.md").read_text(encoding="utf-8")), encoding="utf-8")
    staging = out / "students"
    pages = []
    for name in NOTEBOOKS:
        source = REPO / "notebooks" / f"{name}.ipynb"
        if name in EXERCISES and not teacher:
            source = students_version(source, staging)
        if run_notebooks:
            page = execute(name, source, executed)
        else:
            copy = executed / f"{name}.ipynb"
            # an exercise notebook's copy only where it is the version asked for (no solutions on the students' site)
            same = (
                name not in EXERCISES or ("BEGIN SOLUTION" in copy.read_text(encoding="utf-8")) == teacher
                if copy.is_file()
                else False
            )
            page = copy if same else source
        shutil.copy(page, docs / "notebooks" / f"{name}.ipynb")
        pages.append(f"  - {name}: notebooks/{name}.ipynb")
    carried = carried_pages()
    for path in carried:
        text, images = site_page(path, (REPO / path).read_text(encoding="utf-8"), carried)
        staged = docs / _staged(path)
        staged.parent.mkdir(parents=True, exist_ok=True)
        staged.write_text(text, encoding="utf-8")
        for image in images:
            (docs / image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / image, docs / image)

    def entries(paths: list[str]) -> str:
        return "\n".join(f"    - {_staged(p)}" for p in paths if p in carried)

    extra = [p for p in carried if p.startswith("docs/") and p not in GUIDES + METHODS]
    (out / "mkdocs.yml").write_text(
        MKDOCS_YML.format(
            pages="\n".join(pages), guides=entries(GUIDES + extra), methods=entries(METHODS), results=entries(RESULTS)
        ),
        encoding="utf-8",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--clean", "--quiet"], cwd=out, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"mkdocs build failed:\n{proc.stderr[-3000:]}")
    return out / "site" / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=str(REPO / "build" / "course_site"), help="build folder (site/ inside)")
    parser.add_argument("--teacher", action="store_true", help="keep the solutions and written answers")
    parser.add_argument(
        "--execute",
        action="store_true",
        help="run every notebook on the lab preset first (minutes; outputs kept for later builds)",
    )
    parser.add_argument(
        "--executed", default=str(EXECUTED), help="folder of the executed copies the pages show (and --execute writes)"
    )
    args = parser.parse_args(argv)
    index = build(Path(args.out), teacher=args.teacher, run_notebooks=args.execute, executed=Path(args.executed))
    print(f"course site: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
