"""train(cfg) end to end on a tiny random BERT and real data; records; no lost results."""

import csv
import json

import pytest

from siftkit.run.config import RunConfig
from siftkit.run.records import OutputDirError
from siftkit.run.training import train

RESULT_KEYS = {"config", "metrics", "history", "meta"}
META_KEYS = {"versions", "device", "git_commit", "wall_time_s"}


def smoke(tmp_path, smoke_params, name="run", **kw):
    return RunConfig.from_yaml(smoke_params, output_dir=str(tmp_path / name), **kw)


def test_p2_plain_run_writes_every_record(tmp_path, smoke_params):
    cfg = smoke(tmp_path, smoke_params, max_train_samples=40, logging_steps=1)
    record = train(cfg, progress=False)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert RESULT_KEYS <= set(saved) and META_KEYS <= set(saved["meta"])
    assert set(saved["metrics"]) >= {"uci_test_accuracy", "uci_zero_shot_accuracy", "twitter_val_accuracy"}
    assert saved["config"]["adv_epsilon"] == 0.0 and saved["config"]["algo"] == "plain"
    assert all(0.0 <= v <= 1.0 for k, v in saved["metrics"].items() if k.endswith("accuracy"))
    # 40 examples, batch 4 -> 10 steps in each of the two stages, one history row per step
    assert [r["stage"] for r in saved["history"]] == ["twitter"] * 10 + ["uci"] * 10
    assert all({"loss", "task_loss", "learning_rate"} <= set(r) for r in saved["history"])
    # the schedule is sized per stage: it restarts at the peak rate for stage 2
    lrs = [r["learning_rate"] for r in saved["history"]]
    assert lrs[0] == lrs[10] == cfg.learning_rate and lrs[9] < lrs[0]
    rows = list(csv.DictReader((tmp_path / "run" / "history.csv").open()))
    assert len(rows) == 20 and float(rows[3]["task_loss"]) == pytest.approx(saved["history"][3]["task_loss"])
    assert record["metrics"] == saved["metrics"]


def test_cola_run_reports_both_dev_mccs(tmp_path, smoke_params):
    record = train(smoke(tmp_path, smoke_params, task="cola"), progress=False)
    assert {"in_domain_dev_mcc", "out_of_domain_dev_mcc"} <= set(record["metrics"])


def test_plain_loss_decreases_on_real_examples(tmp_path, smoke_params):
    # A few epochs over 16 real tweets: the task loss must go down.
    cfg = smoke(tmp_path, smoke_params, task="cola", max_train_samples=16, num_train_epochs=6, learning_rate=3e-3)
    hist = train(cfg, progress=False)["history"]
    losses = [r["task_loss"] for r in hist]
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4


@pytest.mark.slow
def test_existing_results_are_never_overwritten_without_asking(tmp_path, smoke_params):
    cfg = smoke(tmp_path, smoke_params)
    train(cfg, progress=False)
    before = (tmp_path / "run" / "results.json").read_bytes()
    with pytest.raises(OutputDirError, match="overwrite"):
        train(cfg, progress=False)
    assert (tmp_path / "run" / "results.json").read_bytes() == before
    train(cfg.replace(overwrite=True, seed=cfg.seed + 1), progress=False)
    assert (tmp_path / "run" / "results.json").read_bytes() != before


@pytest.mark.slow
def test_short_real_run_minilm_cola_reaches_positive_mcc(tmp_path):
    # The offline MiniLM on 400 CoLA training sentences. One epoch (25-200 steps at batch
    # 16-2, learning rates 5e-5 to 5e-4) left MiniLM predicting "acceptable" for every dev
    # sentence (MCC 0.0); five epochs at batch 16 and 1e-4 is the shortest run we measured
    # that separates the classes.
    cfg = RunConfig(
        task="cola",
        algo="plain",
        max_train_samples=400,
        num_train_epochs=5,
        per_device_train_batch_size=16,
        learning_rate=1e-4,
        max_length=64,
        output_dir=str(tmp_path / "cola"),
    )
    metrics = train(cfg, progress=False)["metrics"]
    print("MiniLM CoLA-400 metrics:", metrics)
    assert metrics["in_domain_dev_mcc"] > 0


# ------------------------------------------------------------------ progress on the terminal


class _Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_progress_lines_are_throttled():
    import io

    from siftkit.run.training import ProgressLines

    clock, out = _Clock(), io.StringIO()
    lines = ProgressLines("sift · twitter", total=100, every_s=30, stream=out, clock=clock)
    for step in range(1, 101):
        clock.t = step * 1.0  # one second a step
        lines.update(step, loss=0.5)
    text = out.getvalue().splitlines()
    # the first step, then every 30 s, then the last step
    assert [t.split(" step ")[1].split("/")[0] for t in text] == ["1", "31", "61", "91", "100"]
    assert text[0] == "siftkit: sift · twitter step 1/100 (1%) · loss 0.5000 · 1.0 s, time left: estimating…"
    assert text[1] == "siftkit: sift · twitter step 31/100 (31%) · loss 0.5000 · 31 s, about 69 s left"
    assert text[-1] == "siftkit: sift · twitter step 100/100 (100%) · loss 0.5000 · 100 s"


def test_time_left_says_estimating_until_it_is_within_30_percent():
    """A fake clock: the first step pays for start-up (8 s), then steps of 0.3 s ± 40% with a
    slower stretch. Every estimate shown is within ±30% of the time the remaining steps then
    take; before there is one, the line says "estimating…"; and one comes early."""
    import io
    import random

    from siftkit.run.progress import ProgressLines

    rng = random.Random(0)
    total = 300
    steps = [8.0] + [0.3 * (1 + rng.uniform(-0.4, 0.4)) * (1.25 if 100 <= i < 130 else 1.0) for i in range(1, total)]
    clock, out = _Clock(), io.StringIO()
    lines = ProgressLines("sift · twitter", total=total, every_s=0.0, stream=out, clock=clock)
    shown = {}
    for step in range(1, total + 1):
        clock.t += steps[step - 1]
        lines.update(step, loss=0.5)
        last = out.getvalue().splitlines()[-1]
        if step < total and "estimating…" not in last:
            shown[step] = lines.left.seconds_left()
            truth = sum(steps[step:])
            assert abs(shown[step] - truth) <= 0.3 * truth, (step, shown[step], truth)
    assert "time left: estimating…" in out.getvalue().splitlines()[0]
    assert shown and min(shown) <= 20, "an estimate within the first 20 steps"
    assert len(shown) > 0.9 * (total - 1)


def test_time_left_with_noisy_steps_is_shown_only_within_30_percent():
    """Steps whose time varies as much as their mean (exponential): an estimate is a statistical
    statement (about 95%), so over five runs at least 95% of the estimates shown are within ±30%
    of the truth, and each run shows one for most of its steps."""
    import io
    import random

    from siftkit.run.progress import ProgressLines

    within = shown_total = 0
    for seed in range(5):
        rng = random.Random(seed)
        total = 400
        steps = [5.0] + [rng.expovariate(1 / 0.3) for _ in range(total - 1)]
        clock, out = _Clock(), io.StringIO()
        lines = ProgressLines("sift · uci", total=total, every_s=0.0, stream=out, clock=clock)
        shown = 0
        for step in range(1, total + 1):
            clock.t += steps[step - 1]
            lines.update(step)
            left = lines.left.seconds_left()
            if step < total and "estimating…" not in out.getvalue().splitlines()[-1]:
                shown += 1
                within += abs(left - sum(steps[step:])) <= 0.3 * sum(steps[step:])
        assert shown > total / 2, seed
        shown_total += shown
    assert within >= 0.95 * shown_total, (within, shown_total)


def test_progress_in_a_notebook_is_one_updating_line():
    """In a kernel, the loop gets no tqdm bar; the one line is updated in place (throttled to a
    second) and ends on the last step; the terminal lines go to their own stream."""
    import io

    from siftkit.run import progress

    class Line:
        def __init__(self):
            self.shown = []

        def show(self, line, step, total):
            self.shown.append((step, line))

    clock, out, line = _Clock(), io.StringIO(), Line()
    lines = progress.ProgressLines("sift · uci", total=50, every_s=30, stream=out, clock=clock, notebook=line)
    for step in range(1, 51):
        clock.t = step * 0.25
        lines.update(step, loss=0.7)
    steps = [s for s, _ in line.shown]
    assert steps[0] == 1 and steps[-1] == 50 and len(steps) <= 14  # 12.5 s at one update a second
    assert all("\n" not in text and text.startswith("sift · uci step") for _, text in line.shown)
    assert len(out.getvalue().splitlines()) == 2  # step 1 and the end: the terminal is not flooded
    bundle = progress.NotebookLine._bundle("sift · uci step 2/50 <x>", 2, 50)
    assert bundle["text/plain"] == "sift · uci step 2/50 <x>" and "&lt;x&gt;" in bundle["text/html"]
    bar, terminal = progress.open_progress("plain · twitter", 10, 0, show=False)
    assert terminal is None and bar.disable


@pytest.mark.slow
def test_train_reports_progress_on_stderr_early(tmp_path, smoke_params, monkeypatch):
    # Under papermill the bar lives in the notebook; the kernel's own stderr reaches the
    # terminal. Something must show there within the first 30 s of training.
    import sys
    import time

    class Recorder:
        def __init__(self):
            self.lines: list[tuple[float, str]] = []

        def write(self, text):
            if text.strip():
                self.lines.append((time.monotonic(), text.strip()))

        def flush(self):
            pass

    rec = Recorder()
    monkeypatch.setattr(sys, "__stderr__", rec)
    start = time.monotonic()
    train(smoke(tmp_path, smoke_params, algo="sift", max_train_samples=40), progress=True)
    end = time.monotonic()
    assert rec.lines, "no progress line on stderr"
    first_time, first = rec.lines[0]
    assert first.startswith("siftkit: sift · twitter step 1/10 (10%)")
    assert first_time - start < 30 and first_time < end
    assert any(t.startswith("siftkit: sift · uci step 10/10 (100%)") for _, t in rec.lines)
    # progress=False (tests, sweeps' quiet mode) writes nothing
    rec.lines.clear()
    train(smoke(tmp_path, smoke_params, name="quiet"), progress=False)
    assert rec.lines == []
