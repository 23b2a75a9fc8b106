"""Your own domain shift (task: shift): the spec, its data, its runs, and P1/P2 left as they were.

Small csv/jsonl files are written per test; runs use the tiny random BERT. Every bad input is
a ValueError naming the spec key, the file, the column or the value (docs/robustness.md rows,
logged through `robustness_log`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers import robustness_log

from siftkit.core.metrics import macro_f1, matthews_corrcoef, multiclass_mcc
from siftkit.data.shift_data import ShiftDataWarning, load_data
from siftkit.data.shift_spec import parse_spec
from siftkit.run.config import RunConfig
from siftkit.run.protocols import build_stages
from siftkit.run.training import train

REPO = Path(__file__).resolve().parents[2]
TINY = dict(
    model_name="random:bert",
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    learning_rate=1e-3,
    logging_steps=1,
    max_length=32,
    cpu=True,
)
POS = [
    "a lovely film",
    "great acting and a fine story",
    "I enjoyed every minute",
    "wonderful, truly",
    "a delight from start to end",
    "superb",
]
NEG = [
    "a dull film",
    "the plot made no sense",
    "I want my money back",
    "awful, truly",
    "boring from start to end",
    "dreadful",
]


def _csv(path: Path, header: str, rows: list[tuple]) -> str:
    lines = [header] + [",".join(json.dumps(v) if isinstance(v, str) else str(v) for v in row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _pair_files(tmp_path: Path) -> tuple[str, str]:
    """Reviews (stars 1-5) in csv, tweets ("pos"/"neg") in jsonl: two label schemes, one shift."""
    reviews = _csv(
        tmp_path / "reviews.csv",
        "review,stars",
        [(t, 5 if i % 2 else 4) for i, t in enumerate(POS)] + [(t, 1 + i % 2) for i, t in enumerate(NEG)],
    )
    tweets = tmp_path / "tweets.jsonl"
    tweets.write_text(
        "".join(
            json.dumps({"tweet": t, "sentiment": s}) + "\n"
            for t, s in [(p, "pos") for p in POS[:4]] + [(n, "neg") for n in NEG[:4]]
        )
    )
    return reviews, str(tweets)


def _spec(reviews: str, tweets: str, **stage) -> dict:
    return {
        "name": "reviews_to_tweets",
        "labels": ["negative", "positive"],
        "stages": [
            {
                "name": "reviews",
                "validation": {"fraction": 0.25},
                "data": {
                    "files": reviews,
                    "text": "review",
                    "label": "stars",
                    "label_map": {1: "negative", 2: "negative", 4: "positive", 5: "positive"},
                },
                **stage,
            }
        ],
        "evals": [
            {
                "name": "tweets",
                "data": {
                    "files": tweets,
                    "text": "tweet",
                    "label": "sentiment",
                    "label_map": {"neg": "negative", "pos": "positive"},
                },
            }
        ],
    }


def _bad(spec_or_cfg, message: str, what: str, tmp_path: Path, *, build: bool = False):
    """RunConfig (and, with `build`, the stages) refuse the input with exactly `message`."""
    with pytest.raises(ValueError) as err:
        cfg = RunConfig(task="shift", shift=spec_or_cfg, **TINY)
        if build:
            build_stages(cfg)
    assert str(err.value) == message.replace("TMP", str(tmp_path))
    robustness_log(what, str(err.value), tmp=tmp_path)


# ----------------------------------------------------------------------------- P1 and P2


def _digest(stages) -> str:
    parts = [
        [
            s.name,
            list(s.train["text"]),
            [int(y) for y in s.train["label"]],
            s.num_train_epochs,
            s.learning_rate,
            s.val,
            s.val_metric,
            {k: [list(v["text"]), [int(y) for y in v["label"]]] for k, v in s.evals.items()},
        ]
        for s in stages
    ]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


# Computed with siftkit.run.protocols.build_stages of main before the shift spec existed (the
# same `_digest`): every stage's texts, labels, order, epochs, rate and evaluation sets.
P1_P2_DIGESTS = {
    "cola/0": "75277b1cc029e5befa1195799e35961d322706dd8a8f125dc7c3fe9656ab0c4f",
    "cola/1": "75277b1cc029e5befa1195799e35961d322706dd8a8f125dc7c3fe9656ab0c4f",
    "cola/42": "75277b1cc029e5befa1195799e35961d322706dd8a8f125dc7c3fe9656ab0c4f",
    "p2/0": "06fe9ae3789dad9389f0db9c613f550b80516a2fa9fc950097f38fd1dfb53d4f",
    "p2/1": "245fdd106f38b56b1dcdec8ae32d6ed76f50c2a844508c131f384d22eba79944",
    "p2/42": "347750e553de2628bcfacd53d35e915f2cdb1614168c707dc4f67e7ba0e7c0d1",
    "p2_val/0": "e473078f351064850900160aafe4bcdce20b0e235143f9b71f3fc1d77e280fee",
    "p2_val/1": "89e8c8a4c5d4b0c71148ddb846d59b9792977c9a68e41bd8645052c779179f1f",
    "p2_val/42": "c6b2a7d5e933d56d4ba43c7fce6d7693432c9c77b9d8c59fa2ac19587803f753",
    "cola_capped/0": "30bcc6a31e417e4be5bdcd936c5752424f93ade4823157f8ed66a6a7323797f7",
    "cola_capped/1": "e4558dbcf30000eb8606171494c89139ef5b8eba05987a3f7ff17d7b5071ffeb",
    "cola_capped/42": "f548b467b8e16180472498ceb4629fc06c26ec01b1cb72a4575e342a79008f1c",
    "p2_capped/0": "e1d540840fcc3f6a9a341e231976935c295d4a91c7ba9e4222d8948390dd7c57",
    "p2_capped/1": "0e2bc693350e176af99918df4ce7541b0a6def7554e5d8faedf7471010b1e005",
    "p2_capped/42": "359c4e3efb3ca281db276234a8df631994e2570716873677f366ada324c67654",
}
P1_P2_CASES = {
    "cola": dict(task="cola"),
    "p2": dict(task="twitter_to_uci"),
    "p2_val": dict(task="twitter_to_uci", uci_val_size=300),
    "cola_capped": dict(task="cola", max_train_samples=60, max_eval_samples=20),
    "p2_capped": dict(task="twitter_to_uci", max_train_samples=50, max_eval_samples=30),
}


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(P1_P2_DIGESTS))
def test_p1_and_p2_stages_are_unchanged(key, data_dir):
    case, seed = key.split("/")
    stages = build_stages(RunConfig(seed=int(seed), data_dir=str(data_dir), **P1_P2_CASES[case]))
    assert _digest(stages) == P1_P2_DIGESTS[key]
    assert all("dropped_unmapped" not in s.describe() for s in stages)  # their records keep their keys


def test_p1_and_p2_keep_their_binary_metrics_only():
    from siftkit.core.metrics import classification_metrics

    assert sorted(classification_metrics("x", [0, 1, 1], [0, 1, 0])) == ["x_accuracy", "x_mcc"]


# ----------------------------------------------------------------------------- metrics


def test_multiclass_mcc_and_macro_f1():
    preds, labels = [0, 1, 1, 0, 1, 0, 0], [0, 1, 0, 0, 1, 1, 0]
    assert multiclass_mcc(preds, labels, 2) == pytest.approx(matthews_corrcoef(preds, labels))
    # 3 classes: confusion [[2,1,0],[0,1,1],[0,0,2]]; scikit-learn gives 0.59375 (MCC) and 0.7 (macro-F1)
    p3, y3 = [0, 0, 1, 1, 2, 2, 2], [0, 0, 0, 1, 1, 2, 2]
    assert multiclass_mcc(p3, y3, 3) == pytest.approx(0.59375)
    # per-class F1: 0.8, 0.5, 0.8 -> 0.7
    assert macro_f1(p3, y3) == pytest.approx(0.7)
    assert multiclass_mcc([1, 1, 1], [0, 1, 2], 3) == 0.0  # one predicted class: 0, as for two


# ----------------------------------------------------------------------------- loading


def test_label_maps_cast_to_the_canonical_classes(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    spec = parse_spec(_spec(reviews, tweets))
    ds, dropped = load_data(spec.evals[0].data, spec.labels)
    assert ds.features["label"].names == ["negative", "positive"]
    assert ds["label"] == [1, 1, 1, 1, 0, 0, 0, 0] and dropped == 0
    assert ds["text"][:2] == POS[:2]


def test_a_split_without_a_class_keeps_the_class_ids(tmp_path):
    """The trap of class_encode_column: a set holding only 'positive' must still say 1."""
    only = _csv(tmp_path / "only.csv", "text,label", [("fine", "positive"), ("good", "positive")])
    spec = parse_spec(
        {
            "name": "s",
            "labels": ["negative", "positive"],
            "stages": [{"name": "a", "data": {"files": only}}],
            "evals": [{"name": "b", "data": {"files": only}}],
        }
    )
    ds, _ = load_data(spec.stages[0].data, spec.labels)
    assert ds["label"] == [1, 1]


def test_unmapped_drop_drops_and_records(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    with open(reviews, "a") as fh:
        fh.write('"middling",3\n"so-so",3\n')
    spec = _spec(reviews, tweets)
    spec["stages"][0]["data"]["unmapped"] = "drop"
    cfg = RunConfig(task="shift", shift=spec, **TINY)
    stages = build_stages(cfg)
    assert len(stages[0].train) + len(stages[0].evals["reviews_val"]) == 12
    assert stages[0].describe()["dropped_unmapped"] == {"shift.stages[0].data": 2}


def test_a_seeded_validation_fraction(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    a, b, c = (
        build_stages(RunConfig(task="shift", shift=_spec(reviews, tweets), seed=s, **TINY))[0] for s in (1, 1, 2)
    )
    assert len(a.train) == 9 and len(a.evals["reviews_val"]) == 3
    assert a.evals["reviews_val"]["text"] == b.evals["reviews_val"]["text"] != c.evals["reviews_val"]["text"]
    assert not set(a.train["text"]) & set(a.evals["reviews_val"]["text"])
    assert a.val_key == "reviews_val_accuracy"


def test_the_spec_can_be_a_file_and_results_record_the_mapping(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_spec(reviews, tweets)))
    cfg = RunConfig(task="shift", shift=str(path), **TINY)
    # The mapping, not the path, as JSON holds it (label_map's keys are text), so the config
    # read back from results.json or a checkpoint equals it (a resume compares them).
    assert cfg.shift == {**json.loads(json.dumps(_spec(reviews, tweets))), "base_dir": str(tmp_path.resolve())}
    reread = RunConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert reread.to_dict() == cfg.to_dict()
    assert parse_spec(reread.shift).digest == parse_spec(cfg.shift).digest
    assert build_stages(reread)[0].train["label"] == build_stages(cfg)[0].train["label"]


# ----------------------------------------------------------------------------- runs


def test_a_shift_run_trains_and_evaluates_each_target(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    record = train(
        RunConfig(
            task="shift",
            shift=_spec(reviews, tweets),
            algo="sift",
            num_train_epochs=2,
            early_stopping_patience=1,
            output_dir=str(tmp_path / "run"),
            **TINY,
        ),
        progress=False,
    )
    m = record["metrics"]
    for key in ("tweets_accuracy", "tweets_mcc", "tweets_macro_f1", "reviews_val_accuracy"):
        assert 0.0 <= abs(m[key]) <= 1.0
    assert record["meta"]["shift"]["name"] == "reviews_to_tweets"
    assert record["meta"]["shift"]["sha256"] == parse_spec(_spec(reviews, tweets)).digest
    assert set(record["meta"]["data_files"]) == {reviews, tweets}
    assert [row["stage"] for row in record["val_history"]][:1] == ["reviews"]


def test_three_classes_and_sentence_pairs(tmp_path):
    """An NLI-like pair task with three classes: the head has three outputs, pairs are encoded
    together (token type 1 on the second sentence), macro-F1 and K-class MCC are reported."""
    rows = [
        (f"premise {i}", f"hypothesis {i % 3}", ["entailment", "neutral", "contradiction"][i % 3]) for i in range(18)
    ]
    train_file = _csv(tmp_path / "nli.csv", "premise,hypothesis,gold", rows)
    test_file = tmp_path / "nli_test.jsonl"
    test_file.write_text(
        "".join(
            json.dumps({"p": p, "h": h, "y": ["e", "n", "c"][i % 3]}) + "\n" for i, (p, h, _) in enumerate(rows[:9])
        )
    )
    spec = {
        "name": "nli",
        "labels": ["entailment", "neutral", "contradiction"],
        "stages": [{"name": "nli", "data": {"files": train_file, "text": ["premise", "hypothesis"], "label": "gold"}}],
        "evals": [
            {
                "name": "other",
                "data": {
                    "files": str(test_file),
                    "text": ["p", "h"],
                    "label": "y",
                    "label_map": {"e": "entailment", "n": "neutral", "c": "contradiction"},
                },
            }
        ],
    }
    cfg = RunConfig(task="shift", shift=spec, algo="smart", output_dir=str(tmp_path / "run"), **TINY)
    stage = build_stages(cfg)[0]
    assert stage.train.column_names == ["text", "text_pair", "label"]
    from siftkit.run.evaluation import encode_texts
    from siftkit.run.models import load_tokenizer

    enc = encode_texts(["a b"], load_tokenizer(None), 32, ["c d"])
    assert 1 in enc["token_type_ids"][0]
    record = train(cfg, progress=False)
    assert {"other_accuracy", "other_mcc", "other_macro_f1"} <= set(record["metrics"])
    from siftkit.data.shift_data import num_labels

    assert num_labels(cfg) == 3 and num_labels(RunConfig(task="cola")) == 2


def test_a_cached_spec_stage_gives_the_same_run(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    # Half the reviews held out: a quarter of them at this seed is one class, which is refused.
    spec = _spec(reviews, tweets, validation={"fraction": 0.5})
    spec["stages"].append(
        {
            "name": "tweets_ft",
            "num_train_epochs": 1,
            "learning_rate": 5e-4,
            "data": copy.deepcopy(spec["evals"][0]["data"]),
        }
    )
    spec["evals"][0]["after"] = ["reviews", "tweets_ft"]

    def run(name, cache):
        return train(
            RunConfig(
                task="shift",
                shift=spec,
                algo="sift",
                seed=3,
                output_dir=str(tmp_path / name),
                stage_cache_dir=str(tmp_path / "cache") if cache else None,
                **TINY,
            ),
            progress=False,
        )

    with pytest.warns(ShiftDataWarning):
        alone, producer, consumer = run("alone", False), run("producer", True), run("consumer", True)
    assert consumer["meta"]["stages_from_cache"] == ["reviews"]
    assert producer["meta"]["stages_from_cache"] == []
    for record in (producer, consumer):
        assert record["metrics"] == alone["metrics"]
        assert record["history"] == alone["history"]
    assert "tweets_after_reviews_accuracy" in alone["metrics"] and "tweets_accuracy" in alone["metrics"]
    assert [s["learning_rate"] for s in alone["stages"]] == [1e-3, 5e-4]


@pytest.mark.subprocess
def test_p3_runs_from_the_cli(tmp_path, data_dir):
    out = tmp_path / "p3"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "siftkit",
            "train",
            "--params",
            str(REPO / "params/uci_cross_source.yaml"),
            "--algo",
            "sift",
            "--output_dir",
            str(out),
            "--model_name",
            "random:bert",
            "--max_train_samples",
            "40",
            "--max_eval_samples",
            "40",
            "--num_train_epochs",
            "1",
            "--cpu",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((out / "results.json").read_text())
    for target in ("imdb", "yelp"):
        assert {f"{target}_accuracy", f"{target}_mcc"} <= set(record["metrics"])
    assert record["meta"]["shift"]["name"] == "uci_cross_source"
    stage = record["stages"][0]
    assert stage["name"] == "amazon" and stage["val"] == "amazon_val_accuracy"


def test_p3_selects_the_right_sentences(data_dir):
    cfg = RunConfig.from_yaml(REPO / "params/uci_cross_source.yaml", data_dir=str(data_dir))
    stage = build_stages(cfg)[0]
    assert (len(stage.train), len(stage.evals["amazon_val"])) == (900, 100)
    assert {k: len(v) for k, v in stage.evals.items()} == {"amazon_val": 100, "imdb": 1000, "yelp": 1000}
    from siftkit.data.loaders import load

    pool = load("uci_sentiment", data_dir)["pool"]
    imdb = pool.filter(lambda r: r["source"] == "imdb")
    assert stage.evals["imdb"]["text"] == imdb["text"] and stage.evals["imdb"]["label"] == imdb["label"]


# ----------------------------------------------------------------------------- controls


def test_controls_know_a_spec_stage_count(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    with pytest.raises(ValueError, match="has one stage"):
        RunConfig(task="shift", shift=_spec(reviews, tweets), reinit_head=True, **TINY)
    two = _spec(reviews, tweets)
    two["stages"].append({"name": "again", "data": two["stages"][0]["data"]})
    assert RunConfig(task="shift", shift=two, reinit_head=True, algo="sift", adv_stages="last", **TINY).reinit_head
    two["stages"][1]["validation"] = None
    with pytest.raises(ValueError) as err:
        RunConfig(task="shift", shift=two, early_stopping_patience=1, **TINY)
    assert str(err.value) == (
        "early_stopping_patience=1 watches each stage's validation set, and shift stage(s) "
        "'again' have none; give each a validation (e.g. validation: {fraction: 0.1})"
    )
    robustness_log("a shift stage without validation, with early_stopping_patience=1", str(err.value))


# ----------------------------------------------------------------------------- bad input


def _with(spec: dict, path: list, value) -> dict:
    spec = copy.deepcopy(spec)
    target = spec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return spec


def test_unknown_keys_are_named(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    spec = _spec(reviews, tweets)
    _bad(
        {**spec, "lables": ["a", "b"]},
        "unknown key(s) in shift: lables; known keys: name, labels, stages, evals",
        "a spec key that does not exist (`lables:`)",
        tmp_path,
    )
    _bad(
        _with(spec, ["stages", 0, "data", "txt"], "review"),
        "unknown key(s) in shift.stages[0].data: txt; known keys: files, dataset, kit, format, config, split, where, "
        "text, label, label_map, unmapped, encoding",
        "a data key that does not exist (`txt:`)",
        tmp_path,
    )
    _bad(
        _with(spec, ["stages", 0, "epochs"], 3),
        "unknown key(s) in shift.stages[0]: epochs; known keys: name, data, num_train_epochs, learning_rate, "
        "validation, val_metric",
        "a stage key that does not exist (`epochs:`)",
        tmp_path,
    )
    _bad(
        None,
        "task='shift' needs a spec in the field shift (a mapping with name, labels, stages and evals, or the "
        "path of a YAML file holding it); see docs/your_shift.md",
        "task: shift without a spec",
        tmp_path,
    )
    with pytest.raises(ValueError) as err:
        RunConfig(task="cola", shift=spec)
    assert str(err.value).startswith("shift (a domain-shift spec) is used by task='shift' only; task='cola'")
    robustness_log("a shift spec with task: cola", str(err.value))


@pytest.mark.subprocess
def test_an_unknown_key_in_a_params_file_spec(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    params = tmp_path / "p.yaml"
    params.write_text(
        yaml.safe_dump({"task": "shift", "shift": _with(_spec(reviews, tweets), ["evals", 0, "afterr"], ["reviews"])})
    )
    proc = subprocess.run(
        [sys.executable, "-m", "siftkit", "train", "--params", str(params), "--output_dir", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "siftkit train: error: unknown key(s) in shift.evals[0]: afterr; known keys: name, data, after"
    )
    robustness_log("CLI, params file with a spec key that does not exist (`afterr:`)", proc.stderr.strip())


def test_two_evaluation_sets_with_one_name(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    spec = _spec(reviews, tweets)
    spec["evals"].append(copy.deepcopy(spec["evals"][0]))
    _bad(
        spec,
        "shift.evals: evaluation set name(s) 'tweets' given more than once; each evaluation set needs its own name",
        "two evaluation sets named `tweets`",
        tmp_path,
    )


def test_a_missing_column_lists_the_columns(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    _bad(
        _with(_spec(reviews, tweets), ["stages", 0, "data", "text"], "body"),
        f"shift.stages[0].data: {reviews} has no column 'body' (named by shift.stages[0].data.text); its columns: "
        f"review, stars",
        "a text column that is not in the file (`text: body`)",
        tmp_path,
        build=True,
    )


def test_unmapped_labels_are_listed_with_counts(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    with open(reviews, "a") as fh:
        fh.write('"middling",3\n"so-so",3\n"odd",7\n')
    _bad(
        _spec(reviews, tweets),
        f"shift.stages[0].data: column 'stars' of {reviews} holds label value(s) with no mapping: '3' (2 rows), "
        f"'7' (1 row); shift.stages[0].data.label_map maps '1', '2', '4', '5'; add them to the label map, or set "
        f"shift.stages[0].data.unmapped: drop to drop those rows",
        "label values 3 and 7 with no mapping",
        tmp_path,
        build=True,
    )


def test_a_class_absent_from_training(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    spec = _with(_spec(reviews, tweets), ["labels"], ["negative", "positive", "mixed"])
    _bad(
        spec,
        f"shift.stages[0].data: the training data ({reviews}) have no row of canonical class(es) 'mixed'; "
        f"every class in shift.labels needs training examples (check the label map, or remove the class from "
        f"shift.labels)",
        "a canonical class (`mixed`) with no training row",
        tmp_path,
        build=True,
    )


def test_empty_files_and_no_rows_after_mapping(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    _bad(
        _with(_spec(reviews, tweets), ["evals", 0, "data", "files"], str(empty)),
        f"shift.evals[0].data: file {empty} is empty",
        "an empty evaluation file",
        tmp_path,
        build=True,
    )
    header_only = _csv(tmp_path / "header.csv", "review,stars", [])
    _bad(
        _with(_spec(reviews, tweets), ["stages", 0, "data", "files"], header_only),
        f"shift.stages[0].data: {header_only} has no rows",
        "a csv with a header and no rows",
        tmp_path,
        build=True,
    )
    threes = _csv(tmp_path / "threes.csv", "review,stars", [("meh", 3), ("so-so", 3)])
    spec = _with(_spec(reviews, tweets), ["stages", 0, "data", "files"], threes)
    spec["stages"][0]["data"]["unmapped"] = "drop"
    _bad(
        spec,
        f"shift.stages[0].data: no rows of {threes} are left after the label map (2 dropped as unmapped)",
        "every row dropped by `unmapped: drop`",
        tmp_path,
        build=True,
    )


@pytest.mark.parametrize(
    "cell, problem", [('"  "', "is empty ('  ')"), ("", "is empty (missing / NaN)"), ("12", "is 12 (int), not text")]
)
def test_bad_texts_are_named(tmp_path, cell, problem):
    reviews, tweets = _pair_files(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text(f'review,stars\n"fine",5\n{cell},1\n')
    if cell == "12":  # a whole column of numbers: pandas reads it as int
        bad.write_text("review,stars\n12,5\n13,1\n")
        problem, row = "is 12 (int), not text", 1
    else:
        row = 2
    _bad(
        _with(_spec(reviews, tweets), ["stages", 0, "data", "files"], str(bad)),
        f"shift.stages[0].data: {bad}, column 'review', data row {row} {problem}; every text must be a non-empty "
        f"string",
        f"a csv text cell {cell!r}" + (" (a column of numbers)" if cell == "12" else ""),
        tmp_path,
        build=True,
    )


def test_a_validation_fraction_that_leaves_a_part_empty(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    _bad(
        _with(_spec(reviews, tweets), ["stages", 0, "validation"], {"fraction": 0.01}),
        f"shift.stages[0].data: validation fraction 0.01 of the 12 training rows of {reviews} leaves 12 for "
        f"training and 0 for validation; each needs at least one",
        "validation fraction 0.01 of 12 rows",
        tmp_path,
        build=True,
    )
    _bad(
        _with(_spec(reviews, tweets), ["stages", 0, "validation"], {"fraction": 1.5}),
        "shift.stages[0].validation.fraction must be in (0, 1) (the seeded share of the stage's training rows held "
        "out), got 1.5",
        "validation fraction 1.5",
        tmp_path,
    )


def test_a_dataset_name_not_available_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf"))
    reviews, tweets = _pair_files(tmp_path)
    spec = _with(_spec(reviews, tweets), ["evals", 0, "data"], {"dataset": "no_such_user/no_such_set"})
    with pytest.raises(ValueError) as err:
        build_stages(RunConfig(task="shift", shift=spec, **TINY))
    text = str(err.value)
    assert text.startswith(
        "shift.evals[0].data: dataset 'no_such_user/no_such_set' split 'train' is not "
        "available offline (nor in the local datasets cache): "
    )
    assert text.endswith(
        "download it where there is a network, or save it as files (ds.to_csv / to_json / "
        "to_parquet) and point shift.evals[0].data.files at them"
    )
    robustness_log("`dataset: no_such_user/no_such_set` offline", text, tmp=tmp_path)


def test_the_same_file_for_training_and_evaluation_warns(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    spec = _with(
        _spec(reviews, tweets), ["evals", 0, "data"], copy.deepcopy(_spec(reviews, tweets)["stages"][0]["data"])
    )
    with pytest.warns(ShiftDataWarning) as caught:
        build_stages(RunConfig(task="shift", shift=spec, **TINY))
    message = str(caught[0].message)
    assert message == (
        f"shift: evaluation set 'tweets' reads the same data as stage 'reviews' ({reviews}); that is not out of domain"
    )
    robustness_log("the training file as an evaluation set (a warning)", message, tmp=tmp_path)


def test_a_file_that_does_not_exist(tmp_path):
    reviews, tweets = _pair_files(tmp_path)
    _bad(
        _with(_spec(reviews, tweets), ["evals", 0, "data", "files"], "nowhere.csv"),
        "shift.evals[0].data: file not found: nowhere.csv",
        "a data file that does not exist",
        tmp_path,
        build=True,
    )


# ----------------------------------------------------------------------------- sweeps and summaries


def test_a_sweep_plans_a_spec_and_chooses_on_validation_only(tmp_path):
    from siftkit.cli.sweep import plan

    reviews, tweets = _pair_files(tmp_path)
    params = tmp_path / "spec_params.yaml"
    params.write_text(yaml.safe_dump({"task": "shift", "shift": _spec(reviews, tweets), **TINY}))
    runs = plan(str(params), ["plain", "sift"], [1], tmp_path / "sw", "lr", {}, grid=["learning_rate=1e-3,2e-3"])
    assert runs[0].run_dir.parent.parent.name == "shift-reviews_to_tweets"
    assert {r.select_on for r in runs} == {"reviews_val_accuracy"}  # the stage's own validation metric
    with pytest.raises(ValueError) as err:
        plan(
            str(params),
            ["plain"],
            [1],
            tmp_path / "sw",
            "lr",
            {},
            grid=["learning_rate=1e-3,2e-3"],
            select_on="tweets_accuracy",
        )
    assert str(err.value) == (
        "--select-on tweets_accuracy is not a validation metric of shift spec "
        "'reviews_to_tweets' (the evaluation sets are reported results, never chosen on); "
        "choose one of reviews_val_accuracy, reviews_val_mcc, reviews_val_macro_f1"
    )
    robustness_log("sweep `--select-on tweets_accuracy` (an evaluation set of the spec)", str(err.value))
    with pytest.raises(ValueError, match="runs of two shift specs are never compared"):
        plan(str(params), ["plain"], [1], tmp_path / "sw", "s", {}, grid=["shift=a.yaml,b.yaml"])


def test_spec_runs_summarize_as_their_own_group(tmp_path):
    from siftkit.study.runs import group_runs, load_runs
    from siftkit.study.summarize import render

    reviews, tweets = _pair_files(tmp_path)
    for algo in ("plain", "sift"):
        train(
            RunConfig(
                task="shift",
                shift=_spec(reviews, tweets),
                algo=algo,
                seed=1,
                output_dir=str(tmp_path / "runs" / algo),
                **TINY,
            ),
            progress=False,
        )
    other = _spec(reviews, tweets)
    other["evals"][0]["name"] = "tweets2"  # another spec: another group, never compared with the first
    train(
        RunConfig(task="shift", shift=other, seed=1, output_dir=str(tmp_path / "runs" / "other"), **TINY),
        progress=False,
    )
    runs = load_runs([tmp_path / "runs"])
    groups = group_runs(runs)
    digest = parse_spec(_spec(reviews, tweets)).digest[:12]
    assert sorted(k[0] for k in groups) == sorted(
        [f"shift:reviews_to_tweets@{digest}", f"shift:reviews_to_tweets@{parse_spec(other).digest[:12]}"]
    )
    text, _ = render(groups, len(runs))
    assert f"## Shift spec reviews_to_tweets (spec sha256 {digest}…)" in text
    assert "tweets_accuracy" in text and "`sift` − `plain`" in text


@pytest.mark.subprocess
def test_the_readme_example_runs(tmp_path):
    """docs/your_shift.md's example block, run as written (it uses the tiny random model)."""
    text = (REPO / "docs" / "your_shift.md").read_text(encoding="utf-8")
    start = text.index("```bash", text.index("# Your own domain shift")) + len("```bash")
    script = text[start : text.index("```", start)]
    proc = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads((tmp_path / "myshift/runs/sift-1/results.json").read_text())
    assert {"tweets_accuracy", "tweets_mcc", "tweets_macro_f1", "reviews_val_accuracy"} <= set(record["metrics"])
