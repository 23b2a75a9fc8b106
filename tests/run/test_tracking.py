"""report_to: TensorBoard and MLflow through accelerate, read back and compared with results.json.

Every test stays offline: TensorBoard writes event files, MLflow a local SQLite store (the
run folder's own, or one named by MLFLOW_TRACKING_URI); conftest turns telemetry off.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from helpers import TEXTS, robustness_log, tiny_model, tokenizer

import siftkit.run.tracking as tracking
import siftkit.run.training as training
from siftkit.cli.args import config_from_args
from siftkit.cli.args import config_parser as _config_parser
from siftkit.run.config import RunConfig
from siftkit.run.training import train

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

# Stage 1 (Twitter): 8 examples / batch 4 = 2 steps; stage 2 (UCI): 2 epochs x 2 steps.
# Global steps 1..6, a history row at every step.
BASE = dict(
    task="twitter_to_uci",
    algo="sift",
    model_name="random:bert",
    max_train_samples=8,
    max_eval_samples=8,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    uci_num_train_epochs=2,
    learning_rate=1e-3,
    logging_steps=1,
    max_length=32,
    seed=5,
    cpu=True,
    eval_smoothness=False,
)


@pytest.fixture(autouse=True)
def _no_tracking_uri(monkeypatch):
    """Each test chooses its own MLflow store; none leaks in from the environment."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)


def _run(out, **changes):
    return train(
        RunConfig(**{**BASE, "output_dir": str(out), "report_to": ["tensorboard", "mlflow"], **changes}), progress=False
    )


def _tensorboard(out: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve of the run's TensorBoard folder, as TensorBoard itself reads it
    (events purged after a restart are gone)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / tracking.TENSORBOARD_DIR / tracking.PROJECT))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _mlflow_client(store: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=store)


def _local_store(out: Path) -> str:
    return f"sqlite:///{(out / tracking.MLFLOW_DIR / 'mlflow.db').resolve()}"


def _mlflow_runs(store: str):
    client = _mlflow_client(store)
    experiment = client.get_experiment_by_name(tracking.PROJECT)
    return client, client.search_runs([experiment.experiment_id]) if experiment else []


def _mlflow_curves(client, run_id: str) -> dict[str, list[tuple[int, float]]]:
    keys = client.get_run(run_id).data.metrics
    return {k: sorted((m.step, m.value) for m in client.get_metric_history(run_id, k)) for k in keys}


def _expected(record: dict) -> dict[str, list[tuple[int, float]]]:
    """The curves results.json implies: each history row at its global step, each metric at
    the step of the evaluation (or the end) that produced it."""
    curves: dict[str, list[tuple[int, float]]] = {}
    for row in record["history"]:
        for key, value in tracking.row_values(row).items():
            curves.setdefault(key, []).append((row["global_step"], value))
    return curves


def _same(a: float, b: float, rel: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=rel, abs=1e-30)


def _assert_curves_equal(got: dict, expected: dict, rel: float) -> None:
    for key, points in expected.items():
        assert [s for s, _ in got[key]] == [s for s, _ in points], key
        assert all(_same(g, e, rel) for (_, g), (_, e) in zip(got[key], points)), (key, got[key], points)


# ----------------------------------------------------------------------------- the field


@pytest.mark.parametrize(
    "given, expected",
    [
        (None, []),
        ("none", []),
        ("", []),
        ([], []),
        (["none"], []),
        ("tensorboard", ["tensorboard"]),
        ("mlflow, TensorBoard", ["mlflow", "tensorboard"]),
        (["tensorboard", "tensorboard"], ["tensorboard"]),
    ],
)
def test_report_to_takes_lists_text_and_none(given, expected):
    assert RunConfig(report_to=given).report_to == expected
    assert RunConfig().report_to == []


@pytest.mark.parametrize("bad", ["wandb", ["tensorboard", "all"], 3, ["tensorboard", 1]])
def test_a_bad_report_to_is_an_error_naming_the_field(bad):
    with pytest.raises(ValueError, match="report_to") as err:
        RunConfig(report_to=bad)
    robustness_log(f"report_to={bad!r}", str(err.value))


def test_report_to_from_the_command_line_and_not_part_of_a_runs_identity():
    args = _config_parser("siftkit train").parse_args(["--report_to", "tensorboard,mlflow"])
    assert config_from_args(args).report_to == ["tensorboard", "mlflow"]
    # Adding a tracker on resume, or comparing runs that reported differently, is fine.
    from siftkit.study.runs import SETTINGS_THAT_MAY_DIFFER

    assert "report_to" in training._RESUME_IGNORED and "report_to" in SETTINGS_THAT_MAY_DIFFER
    fields = RunConfig.field_names()
    assert fields.index("report_to") == fields.index("seed") + 1  # the end of the first block


def test_a_tracker_that_is_not_installed_names_the_pip_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "_installed", lambda module: module != "mlflow")
    with pytest.raises(ValueError, match=r"'mlflow'.*not installed.*siftkit\[trackers\]") as err:
        _run(tmp_path / "run")
    robustness_log("report_to=['tensorboard', 'mlflow'] without mlflow installed", str(err.value))
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_an_accelerator_without_the_trackers_is_refused(tmp_path):
    cfg = RunConfig(**{**BASE, "output_dir": str(tmp_path / "run"), "report_to": ["tensorboard"]})
    accelerator = training._make_accelerator(RunConfig(**BASE))  # built without log_with
    with pytest.raises(ValueError, match=r"accelerator_kwargs"):
        train(cfg, progress=False, accelerator=accelerator)


# ----------------------------------------------------------------------------- what is logged


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tracked") / "twitter_to_uci" / "sift" / "seed5"
    record = _run(out)
    return out, record


@pytest.mark.slow
def test_tensorboard_holds_every_history_row_and_metric(tracked_run):
    out, record = tracked_run
    curves = _tensorboard(out)
    expected = _expected(record)
    assert {
        "twitter/task_loss",
        "uci/task_loss",
        "uci/adv_loss",
        "uci/relative_perturbation",
        "uci/ascent_cosine",
        "uci/learning_rate",
    } <= set(expected)
    _assert_curves_equal(curves, expected, rel=1e-6)  # TensorBoard stores float32
    # stage 1's evaluation at its last step (2), stage 2's and the summaries at the end (6)
    assert curves["eval/twitter_val_accuracy"] == [(2, pytest.approx(record["metrics"]["twitter_val_accuracy"]))]
    assert curves["eval/uci_test_mcc"] == [(6, pytest.approx(record["metrics"]["uci_test_mcc"]))]
    assert curves["eval/mean_relative_perturbation"][0][0] == 6


@pytest.mark.slow
def test_mlflow_holds_the_same_values_and_the_resolved_config(tracked_run):
    out, record = tracked_run
    client, runs = _mlflow_runs(_local_store(out))
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    run = runs[0]
    assert run.info.run_name == "twitter_to_uci/sift/seed5"
    curves = _mlflow_curves(client, run.info.run_id)
    _assert_curves_equal(curves, _expected(record), rel=1e-12)
    assert curves["eval/uci_test_accuracy"] == [(6, record["metrics"]["uci_test_accuracy"])]
    params = run.data.params
    # resolved values, not the None the config was built with
    assert float(params["adv_epsilon"]) == record["config"]["adv_epsilon"] == 1e-2
    assert params["report_to"] == "tensorboard,mlflow" and params["bregman_weight"] == "None"
    assert os.environ.get("MLFLOW_TRACKING_URI") is None  # the local store was set for the run only


@pytest.mark.slow
def test_mlflow_tracking_uri_is_used_when_set(tmp_path, monkeypatch):
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    record = _run(tmp_path / "run", report_to=["mlflow"], max_train_samples=4, uci_num_train_epochs=1)
    assert not (tmp_path / "run" / tracking.MLFLOW_DIR).exists()
    assert not (tmp_path / "run" / tracking.TENSORBOARD_DIR).exists()
    client, runs = _mlflow_runs(store)
    assert len(runs) == 1
    _assert_curves_equal(_mlflow_curves(client, runs[0].info.run_id), _expected(record), rel=1e-12)


# ----------------------------------------------------------------------------- resume, kernels


class _Crash(Exception):
    pass


@pytest.mark.slow
def test_a_resumed_run_continues_its_curves_without_duplicated_steps(tmp_path, monkeypatch):
    """Killed at step 3, after it logged step 3 but with its checkpoint at step 2: the
    resumed run logs from step 3 on, and each curve has each step once, with the values
    of the finished run's history (the resumed run is exact)."""
    import mlflow

    out = tmp_path / "run"
    real = tracking.RunTracking.log_row

    def log_then_die(self, row):
        real(self, row)
        if row["global_step"] == 3:
            raise _Crash

    with monkeypatch.context() as mp:
        mp.setattr(tracking.RunTracking, "log_row", log_then_die)
        with pytest.raises(_Crash):
            _run(out, save_steps=2)
    assert mlflow.active_run() is None  # ended even though training raised
    client, runs = _mlflow_runs(_local_store(out))
    assert [r.info.status for r in runs] == ["FAILED"]
    assert [s for s, _ in _mlflow_curves(client, runs[0].info.run_id)["twitter/loss"]] == [1, 2]
    assert [s for s, _ in _mlflow_curves(client, runs[0].info.run_id)["uci/loss"]] == [3]

    record = _run(out, save_steps=2, resume=True)
    assert record["meta"]["resumed_from"] == "step-0000002"
    expected = _expected(record)
    _assert_curves_equal(_tensorboard(out), expected, rel=1e-6)
    client, runs = _mlflow_runs(_local_store(out))
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # the same run, continued
    _assert_curves_equal(_mlflow_curves(client, runs[0].info.run_id), expected, rel=1e-12)


@pytest.mark.slow
def test_trainings_in_one_process_each_get_their_own_run(tmp_path):
    """As in a notebook kernel: one training after another, each ended, none leaking."""
    import mlflow

    small = dict(max_train_samples=4, uci_num_train_epochs=1)
    for seed in (1, 2):
        _run(tmp_path / f"seed{seed}", seed=seed, **small)
        assert mlflow.active_run() is None
    for seed in (1, 2):
        _, runs = _mlflow_runs(_local_store(tmp_path / f"seed{seed}"))
        assert [(r.info.status, r.data.params["seed"]) for r in runs] == [("FINISHED", str(seed))]
    # A fresh run into a folder replaces the earlier run's tracker output instead of mixing.
    record = _run(tmp_path / "seed1", seed=3, overwrite=True, **small)
    _assert_curves_equal(_tensorboard(tmp_path / "seed1"), _expected(record), rel=1e-6)
    _, runs = _mlflow_runs(_local_store(tmp_path / "seed1"))
    assert [r.data.params["seed"] for r in runs] == ["3"]


# ----------------------------------------------------------------------------- AdversarialTrainer


@pytest.mark.slow
def test_adversarial_trainer_logs_its_terms_through_report_to(tmp_path, monkeypatch):
    from datasets import Dataset
    from transformers import TrainingArguments

    from siftkit import AdversarialTrainer

    store = f"sqlite:///{tmp_path / 'hf.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", tracking.PROJECT)
    tok = tokenizer()
    texts = list(TEXTS) * 4
    ds = Dataset.from_dict({"text": texts, "label": [i % 2 for i in range(len(texts))]})
    ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=32), batched=True, remove_columns=["text"])
    args = TrainingArguments(
        output_dir=str(tmp_path / "hf"),
        use_cpu=True,
        report_to=["tensorboard", "mlflow"],
        save_strategy="no",
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        max_steps=3,
        seed=0,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    trainer = AdversarialTrainer(
        model=tiny_model("bert", seed=0, train=True),
        args=args,
        train_dataset=ds,
        processing_class=tok,
        algo="sift",
        adv_noise_std=0.05,
        adv_epsilon=0.2,
    )
    trainer.train()
    logged = [h for h in trainer.state.log_history if "adv_loss" in h]
    assert len(logged) == 3

    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path / "hf"))
    mux.Reload()
    tags = {tag for run in mux.Runs().values() for tag in run.get("scalars", [])}
    assert {"train/adv_loss", "train/relative_perturbation", "train/ascent_cosine"} <= tags
    _, runs = _mlflow_runs(store)
    history = _mlflow_client(store).get_metric_history(runs[0].info.run_id, "adv_loss")
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([h["adv_loss"] for h in logged])


@pytest.mark.slow
def test_a_stage_from_the_cache_reaches_tensorboard_as_if_trained(tmp_path):
    cache = str(tmp_path / "cache")
    trained = _run(tmp_path / "a", stage_cache_dir=cache, uci_val_size=20)
    reused = _run(tmp_path / "b", stage_cache_dir=cache, uci_val_size=20)
    assert reused["meta"]["stages_from_cache"] == ["twitter"]
    curves = _tensorboard(tmp_path / "b")
    _assert_curves_equal(curves, _expected(reused), rel=1e-6)
    assert curves == _tensorboard(tmp_path / "a")  # the same curves, stage 1 included
    assert curves["eval/twitter_val_accuracy"] == [(2, pytest.approx(trained["metrics"]["twitter_val_accuracy"]))]
