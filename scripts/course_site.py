"""The course as a static site: COURSE.md as the front page, every notebook as a page (with its
outputs when an executed copy exists), in MkDocs Material with mkdocs-jupyter.

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
"""

from __future__ import annotations

import argparse
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
    "02_twitter_to_uci": {"algo": "sift", "params_file": "params/lab.yaml",
                          "output_dir": "runs/site/02_twitter_to_uci/sift-seed42", "overwrite": True},
    "03_cola": {"algo": "sift", "params_file": "params/lab.yaml", "output_dir": "runs/site/03_cola/sift-seed42",
                "overwrite": True},
    "04_compare": {"results_glob": "runs/site/**/results.json", "output_dir": "runs/site/04_compare"},
    "05_your_shift": {"params_file": "params/lab.yaml", "output_dir": "runs/site/05_your_shift", "overwrite": True},
}
STUDENT_PREPROCESSOR = ["--ClearSolutions.enforce_metadata=False",
                        '--Exporter.preprocessors=["nbgrader.preprocessors.ClearSolutions"]']

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
"""


def _jupyter() -> str:
    found = shutil.which("jupyter", path=str(Path(sys.executable).parent))
    return found or "jupyter"


def students_version(source: Path, out_dir: Path) -> Path:
    """nbgrader's ClearSolutions on `source` (the command COURSE.md gives teachers)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([_jupyter(), "nbconvert", "--to", "notebook", *STUDENT_PREPROCESSOR, "--output-dir",
                    str(out_dir), str(source)], check=True, capture_output=True, text=True)
    return out_dir / source.name


def execute(name: str, source: Path, executed: Path = EXECUTED) -> Path:
    """Run `source` with papermill on the site's parameters into `executed` (notebooks/executed/site/)."""
    import papermill

    executed.mkdir(parents=True, exist_ok=True)
    out = executed / f"{name}.ipynb"
    papermill.execute_notebook(str(source), str(out), parameters=SITE_PARAMETERS[name], cwd=str(REPO),
                               kernel_name="python3", progress_bar=False)
    return out


def front_page(text: str) -> str:
    """COURSE.md for the site: its links to ``notebooks/<name>.ipynb`` are the site's pages
    already (the same relative path); a link to another file of the repository becomes its
    name in code, since the site does not carry it."""
    return re.sub(r"\[([^\]]+)\]\((?!https?:|#|notebooks/)([^)]+)\)", r"\1 (`\2`)", text)


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
            same = name not in EXERCISES or ("BEGIN SOLUTION" in copy.read_text(encoding="utf-8")) == teacher \
                if copy.is_file() else False
            page = copy if same else source
        shutil.copy(page, docs / "notebooks" / f"{name}.ipynb")
        pages.append(f"  - {name}: notebooks/{name}.ipynb")
    (out / "mkdocs.yml").write_text(MKDOCS_YML.format(pages="\n".join(pages)), encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--clean", "--quiet"], cwd=out,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"mkdocs build failed:\n{proc.stderr[-3000:]}")
    return out / "site" / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "build" / "course_site"), help="build folder (site/ inside)")
    parser.add_argument("--teacher", action="store_true", help="keep the solutions and written answers")
    parser.add_argument("--execute", action="store_true",
                        help="run every notebook on the lab preset first (minutes; outputs kept for later builds)")
    parser.add_argument("--executed", default=str(EXECUTED),
                        help="folder of the executed copies the pages show (and --execute writes)")
    args = parser.parse_args(argv)
    index = build(Path(args.out), teacher=args.teacher, run_notebooks=args.execute, executed=Path(args.executed))
    print(f"course site: {index}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
