"""The run's CPU threads (siftkit.run.threads): chosen from the cores free at start unless the user
set them, said on the first progress line, recorded in results.json, and put back afterwards.

The machine's cores and load are faked (monkeypatch): nothing here depends on the machine.
"""

from __future__ import annotations

import io

import pytest
import torch
from helpers import robustness_log, single_thread

from siftkit.run import threads
from siftkit.run.config import RunConfig
from siftkit.run.progress import ProgressLines
from siftkit.run.threads import CpuState, auto_threads, choose_threads
from siftkit.run.training import train


def _never():
    raise AssertionError("the machine was measured although the threads were set by the user")


@pytest.fixture
def two_physical_cores(monkeypatch):
    """torch's default here is 2 (one per physical core), whatever this machine has."""
    import psutil

    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 2)


@pytest.mark.parametrize(
    "state,expected",
    [
        (CpuState(cores=2, torch_default=2, busy=0.1, load=0.2), 2),  # idle: torch's default, as before
        (CpuState(cores=2, torch_default=2, busy=1.0, load=1.3), 1),  # one competing process
        (CpuState(cores=2, torch_default=2, busy=2.0, load=3.1), 1),  # all taken: still one
        (CpuState(cores=8, torch_default=4, busy=0.0, load=0.0), 4),  # never above torch's default
        (CpuState(cores=8, torch_default=8, busy=2.6, load=2.9), 5),  # 5.4 free
        (CpuState(cores=8, torch_default=8, busy=2.4, load=None), 6),  # 5.6 free; no load average (Windows)
    ],
)
def test_auto_takes_the_free_cores(state, expected):
    choice = auto_threads(state)
    assert choice.threads == expected and choice.source == "auto"
    assert f"{state.cores} cores, {state.busy:.1f} busy with other work" in choice.reason
    assert choice.reason.endswith(f"→ {expected} thread{'s' if expected > 1 else ''}")
    assert ("load" in choice.reason) == (state.load is not None)


def test_the_config_field_wins_over_everything():
    choice = choose_threads(3, on_cpu=True, current=1, env={"OMP_NUM_THREADS": "1"}, measure=_never)
    assert (choice.threads, choice.source) == (3, "num_threads")
    assert choice.reason == "num_threads=3 in the config"


def test_the_environment_wins_over_the_automatic_choice(two_physical_cores):
    # torch read OMP_NUM_THREADS=1 at start: its count is 1, which is also its default then.
    choice = choose_threads(None, on_cpu=True, current=1, env={"OMP_NUM_THREADS": "1"}, measure=_never)
    assert (choice.threads, choice.source, choice.reason) == (
        1,
        "OMP_NUM_THREADS",
        "OMP_NUM_THREADS=1 in the environment",
    )
    choice = choose_threads(None, on_cpu=True, current=3, env={"MKL_NUM_THREADS": "3,1"}, measure=_never)
    assert (choice.threads, choice.source) == (3, "MKL_NUM_THREADS")


def test_a_count_set_in_the_process_before_the_run_is_kept(two_physical_cores):
    choice = choose_threads(None, on_cpu=True, current=1, env={}, measure=_never)
    assert (choice.threads, choice.source) == (1, "torch.set_num_threads")
    assert "torch's default here is 2" in choice.reason


def test_unset_on_cpu_measures_and_chooses(two_physical_cores):
    state = CpuState(cores=2, torch_default=2, busy=1.1, load=2.0)
    choice = choose_threads(None, on_cpu=True, current=2, env={"OMP_NUM_THREADS": "zero"}, measure=lambda: state)
    assert (choice.threads, choice.source) == (1, "auto")  # a value torch ignores is no setting
    choice = choose_threads(None, on_cpu=False, current=2, env={}, measure=_never)
    assert (choice.threads, choice.source) == (2, "accelerator")


def test_one_core_needs_no_measurement(monkeypatch):
    import psutil

    monkeypatch.setattr(psutil, "cpu_count", lambda logical=True: 1)
    choice = choose_threads(None, on_cpu=True, current=1, env={}, measure=_never)
    assert (choice.threads, choice.source, choice.reason) == (1, "auto", "auto: 1 core → 1 thread")


def test_measuring_counts_the_allowed_cpus_and_takes_this_process_out(monkeypatch):
    """Busy time is summed over the CPUs the process may use, less its own CPU time (its other
    threads working while it samples are not "other work")."""
    import types

    import psutil

    clock = {"now": 100.0, "own": 10.0}

    def sleep(seconds):
        clock["now"] += seconds
        clock["own"] += 1.0 * seconds  # one of this process's threads keeps a core busy

    class Process:
        def cpu_times(self):
            return (clock["own"], 0.0)

    monkeypatch.setattr(threads, "time", types.SimpleNamespace(sleep=sleep, monotonic=lambda: clock["now"]))
    monkeypatch.setattr(threads, "allowed_cpus", lambda: [0, 1, 3])
    monkeypatch.setattr(psutil, "Process", Process)
    monkeypatch.setattr(psutil, "cpu_percent", lambda percpu=False: [100.0, 100.0, 100.0, 50.0])
    state = threads.measure_cpus(0.5, env={"OMP_NUM_THREADS": "3"})
    assert (state.cores, state.torch_default) == (3, 3)
    assert state.busy == pytest.approx(1.5)  # CPUs 0, 1 and half of 3, less this process's core (CPU 2 is not ours)


def test_run_threads_sets_the_choice_and_puts_torch_back(monkeypatch, two_physical_cores):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "measure_cpus", lambda env=None: CpuState(2, 2, busy=1.0, load=1.5))
    with single_thread():
        torch.set_num_threads(2)  # torch's untouched default on the faked machine
        with threads.run_threads(None, on_cpu=True) as choice:
            assert choice.threads == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with threads.run_threads(3, on_cpu=True) as choice:
            assert torch.get_num_threads() == 3 and choice.source == "num_threads"
        assert torch.get_num_threads() == 2


def test_progress_lines_say_the_threads():
    out = io.StringIO()
    clock = iter(float(t) for t in range(100)).__next__
    lines = ProgressLines(
        "sift · twitter",
        total=3,
        every_s=0.0,
        stream=out,
        clock=clock,
        note="1 thread (auto)",
        first_note="auto: 2 cores, 1.0 busy with other work → 1 thread",
    )
    for step in (1, 2, 3):
        lines.update(step, 0.5)
    text = out.getvalue().splitlines()
    assert text[0].endswith(" · auto: 2 cores, 1.0 busy with other work → 1 thread")
    assert text[1].endswith(", time left: estimating… · 1 thread (auto)")
    assert text[2].endswith(" · 1 thread (auto)")


SMOKE = dict(
    task="twitter_to_uci",
    algo="sift",
    model_name="random:bert",
    max_train_samples=8,
    max_eval_samples=8,
    per_device_train_batch_size=4,
    per_device_eval_batch_size=8,
    uci_num_train_epochs=1,
    learning_rate=1e-3,
    logging_steps=1,
    max_length=32,
    seed=5,
    cpu=True,
    eval_smoothness=False,
)


def test_a_run_records_and_shows_its_choice(tmp_path, monkeypatch, two_physical_cores):
    import sys

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "measure_cpus", lambda env=None: CpuState(2, 2, busy=1.2, load=3.0))
    err = io.StringIO()
    monkeypatch.setattr(sys, "__stderr__", err)
    with single_thread():
        torch.set_num_threads(2)  # torch's untouched default on the faked machine
        record = train(RunConfig(**SMOKE, output_dir=str(tmp_path / "auto")), progress=True)
        assert torch.get_num_threads() == 2  # put back
    meta = record["meta"]
    assert meta["torch_threads"] == 1
    assert meta["torch_threads_reason"] == "auto: 2 cores, 1.2 busy with other work, load 3.0 → 1 thread"
    assert record["config"]["num_threads"] is None
    first = next(line for line in err.getvalue().splitlines() if line.startswith("siftkit: sift · twitter step"))
    assert first.endswith(" · auto: 2 cores, 1.2 busy with other work, load 3.0 → 1 thread")
    assert any(line.endswith(" · 1 thread (auto)") for line in err.getvalue().splitlines())


@pytest.mark.slow
def test_an_explicit_count_gives_the_same_numbers_as_before(tmp_path, monkeypatch, two_physical_cores):
    """num_threads=1 and a process already on one thread train to the same numbers: the field
    only sets what torch.set_num_threads(1) set before it existed; the machine is never sampled."""
    monkeypatch.setattr(threads, "measure_cpus", _never)
    with single_thread():
        kept = train(RunConfig(**SMOKE, output_dir=str(tmp_path / "kept")), progress=False)
        torch.set_num_threads(2)
        field = train(RunConfig(**SMOKE, num_threads=1, output_dir=str(tmp_path / "field")), progress=False)
        assert torch.get_num_threads() == 2
    assert kept["meta"]["torch_threads_reason"].startswith("1 set before the run (torch.set_num_threads")
    assert field["meta"]["torch_threads_reason"] == "num_threads=1 in the config"
    assert kept["metrics"] == field["metrics"] and kept["history"] == field["history"]


@pytest.mark.parametrize(
    "value,needle",
    [(0, "num_threads must be a finite number > 0, got 0"), (1.5, "num_threads must be of type int, got 1.5")],
    ids=["zero", "fraction"],
)
def test_a_bad_thread_count_is_refused_by_name(value, needle):
    with pytest.raises(ValueError, match=needle) as err:
        RunConfig(num_threads=value)
    robustness_log(f"RunConfig(num_threads={value!r})", str(err.value))


def test_measuring_the_real_machine_gives_a_sane_state():
    state = threads.measure_cpus(0.1)
    assert state.cores == len(threads.allowed_cpus()) >= 1 and state.torch_default >= 1
    assert 0.0 <= state.busy <= state.cores + 0.5  # psutil's shares, rounded per CPU
