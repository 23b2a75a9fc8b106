"""Small shared builders for tests: a cached tokenizer, tiny random models, padded batches.

Kept small and stable on purpose: other test files import it.

    from helpers import tiny_model, make_batch, tokenizer, TEXTS
"""

from __future__ import annotations

import contextlib
import functools

import torch

from siftkit.run.models import build_random_model, load_tokenizer

# Three texts of clearly different token lengths, so a padded batch has real padding.
TEXTS = (
    "a short one",
    "this sentence is quite a bit longer than the two others in the batch",
    "a text of middle length here",
)


@contextlib.contextmanager
def single_thread():
    """Run torch on one intra-op thread (tiny models on a shared CPU are several times
    faster without thread contention); restores the previous setting afterwards.
    conftest.py applies it to the whole session; a test that changed the setting can use it
    again locally."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@functools.lru_cache(maxsize=1)
def tokenizer():
    """The kit's default tokenizer (all-MiniLM-L6-v2's), loaded once per process."""
    return load_tokenizer(None)


def tiny_model(
    arch: str = "bert", *, seed: int = 0, dtype: torch.dtype | None = None, train: bool = False, num_labels: int = 2
):
    """A tiny randomly initialized `*ForSequenceClassification` of `arch` (eval mode by default).

    Seeded, so two calls with the same arguments give identical weights.
    """
    tok = tokenizer()
    torch.manual_seed(seed)
    model = build_random_model(arch, num_labels=num_labels, vocab_size=len(tok), pad_token_id=tok.pad_token_id)
    if dtype is not None:
        model = model.to(dtype)
    return model.train(train)


def make_batch(texts=TEXTS, tok=None, *, labels=None, **tokenizer_kwargs) -> dict:
    """A padded batch as a plain dict of tensors (`labels` added when given).

    Defaults to dynamic padding (`padding=True`); pass e.g. ``padding="max_length",
    max_length=24`` for a fixed length.
    """
    tok = tok if tok is not None else tokenizer()
    tokenizer_kwargs.setdefault("padding", True)
    batch = dict(tok(list(texts), return_tensors="pt", **tokenizer_kwargs))
    if labels is not None:
        batch["labels"] = torch.as_tensor(labels, dtype=torch.long)
    return batch


def real_examples(name: str, n: int, data_dir, split: str | None = None) -> tuple[list[str], list[int]]:
    """The first `n` (text, label) pairs of a real dataset (`siftkit.data.loaders.load`)."""
    from siftkit.data.loaders import load

    dsd = load(name, data_dir)
    ds = dsd[split or next(iter(dsd))]
    ds = ds.select(range(min(n, len(ds))))
    return list(ds["text"]), [int(y) for y in ds["label"]]


def robustness_log(bad_input: str, message: str, **placeholders) -> None:
    """Append what the user saw to $SIFTKIT_ROBUSTNESS_LOG (docs/robustness.md is made from it).

    Each placeholder ``name=value`` replaces the text of `value` (a tmp path, a pid) by `name`.
    """
    import json
    import os

    target = os.environ.get("SIFTKIT_ROBUSTNESS_LOG")
    if not target:
        return
    for name, value in placeholders.items():
        message = message.replace(str(value), name)
    test = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"input": bad_input, "message": message, "test": test}) + "\n")


# The bad-input tests' smallest run: 4 Twitter and 4 UCI examples, batch 4, one step per stage.
TINY = dict(
    model_name="random:bert",
    max_train_samples=4,
    max_eval_samples=4,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=4,
    uci_num_train_epochs=1,
    logging_steps=1,
    max_length=32,
    cpu=True,
)
# A few lines of every real data file: enough for every loader and both protocols, quick to parse.
DATA_PIECES = {
    "cola/in_domain_train.tsv": 40,
    "cola/in_domain_dev.tsv": 20,
    "cola/out_of_domain_dev.tsv": 20,
    "twitter_hate/train.csv": 120,
    "uci_sentiment/amazon_cells_labelled.txt": 30,
    "uci_sentiment/imdb_labelled.txt": 30,
    "uci_sentiment/yelp_labelled.txt": 30,
}


def copy_data_lines(data_dir, root, pieces: dict) -> None:
    """A private copy of the first `n` lines of each data file in `pieces` ({relative path: n})
    under `root`, for tests that break the data."""
    for rel, n in pieces.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        lines = (data_dir / rel).read_bytes().split(b"\n")[:n]
        (root / rel).write_bytes(b"\n".join(lines) + b"\n")


# The students' version of a course notebook: nbgrader's ClearSolutions through nbconvert (as
# scripts/course_site.py makes it); the exercise and notebook tests run it.
STUDENT_COMMAND = [
    "jupyter",
    "nbconvert",
    "--to",
    "notebook",
    "--ClearSolutions.enforce_metadata=False",
    '--Exporter.preprocessors=["nbgrader.preprocessors.ClearSolutions"]',
]


# A 3-class shift spec over generated files, and the tiny settings that run it.
THREE = ["negative", "neutral", "positive"]
_REVIEW_WORDS = {1: "awful", 2: "poor", 3: "average", 4: "fine", 5: "lovely"}
_POST_WORDS = {"n": "hate", "m": "meh", "p": "love"}


def three_class_spec(folder, *, eval_rows: int = 12) -> dict:
    """A 3-class shift spec over two generated files: reviews.csv (stars 1-5, mapped; 3 is
    neutral) -> forum.jsonl (n/m/p, mapped). Texts avoid the kit's domain names."""
    import json
    from pathlib import Path

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stars = [1, 3, 5, 2, 3, 4]
    lines = ["review,stars"] + [f'"{_REVIEW_WORDS[stars[i % 6]]} product, item {i}",{stars[i % 6]}' for i in range(24)]
    (folder / "reviews.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    codes = ["n", "m", "p"]
    (folder / "forum.jsonl").write_text(
        "".join(
            json.dumps({"post": f"i {_POST_WORDS[codes[i % 3]]} this thread {i}", "tag": codes[i % 3]}) + "\n"
            for i in range(eval_rows)
        ),
        encoding="utf-8",
    )
    return {
        "name": "reviews_to_forum",
        "labels": THREE,
        "stages": [
            {
                "name": "reviews",
                "validation": {"fraction": 0.25},
                "data": {
                    "files": str(folder / "reviews.csv"),
                    "text": "review",
                    "label": "stars",
                    "label_map": {1: "negative", 2: "negative", 3: "neutral", 4: "positive", 5: "positive"},
                },
            }
        ],
        "evals": [
            {
                "name": "forum",
                "data": {
                    "files": str(folder / "forum.jsonl"),
                    "text": "post",
                    "label": "tag",
                    "label_map": {"n": "negative", "m": "neutral", "p": "positive"},
                },
            }
        ],
    }


SHIFT_TINY = {
    "model_name": "random:bert",
    "per_device_train_batch_size": 4,
    "per_device_eval_batch_size": 8,
    "learning_rate": 1e-2,
    "logging_steps": 1,
    "max_length": 32,
    "cpu": True,
}
