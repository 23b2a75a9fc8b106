"""Two CPU processes (gloo DDP) train exactly like one process with the same global batch.

The test launches this file with ``python -m torch.distributed.run --nproc_per_node 2``
(the CPU stand-in for ``accelerate launch --multi_gpu``: on CPU, ``accelerate launch
--cpu`` starts a single process unless MPI is set up) and runs the same config in the
pytest process with a per-process batch twice as large.

Why the two runs can agree: the data order is a permutation drawn from (seed, stage,
epoch) alone, and accelerate's batch sharding (``split_batches=False``) gives process i
the batches i, i + 2, ... of size B, so optimizer step k sees the permutation's items
[2kB, 2kB + 2B) on both sides -- the single process's batch k of size 2B. Every term of the
loss is a mean over examples and DDP averages the two processes' gradients, so the update
is the same. What differs per process is randomness, so the comparison turns it off:
dropout is set to 0 and the regularizer's initial noise is replaced by a fixed function of
(token id, position, hidden unit), i.e. per example rather than per batch. Then only the
float rounding differs (padding to a different length per process, an all-reduced mean of
two half-batch means instead of one mean, one thread per process).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import single_thread

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "params" / "smoke.yaml"

# A regularizer big enough to matter (the published SMART defaults give R ~ 1e-10, which
# would compare nothing) and a fast-moving Bregman teacher, so every term of the loss and
# the teacher update are exercised.
OVERRIDES = dict(
    algo="smart",
    cpu=True,
    seed=7,
    max_train_samples=16,
    max_eval_samples=16,
    per_device_eval_batch_size=4,
    adv_noise_std=0.05,
    adv_epsilon=0.2,
    adv_step_size=0.1,
    bregman_weight=1.0,
    bregman_beta=0.5,
    logging_steps=1,
    save_steps=0,
    save_model=True,
)
B = 2  # per-process batch of the 2-process run; the 1-process run uses 2 * B

# Tolerances, see the module docstring: float32 rounding only, amplified by at most 8 Adam
# steps at learning rate 1e-3 (an Adam step moves a weight by ~lr whatever the gradient's
# size, so weights are compared with an absolute tolerance well below lr).
LOSS_RTOL = 1e-5
WEIGHT_ATOL = 1e-5


def _per_example_noise(batch):
    """A stand-in for torch.randn: a fixed pattern per (token id, position, hidden unit)."""
    ids = batch["input_ids"]
    real_randn = torch.randn

    def randn(*shape, device=None, dtype=None, **_):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list, torch.Size)):
            shape = tuple(shape[0])
        b, length, hidden = shape
        assert b == ids.shape[0] and length == ids.shape[1]
        pos = torch.arange(length, dtype=torch.float32, device=device)[None, :, None]
        unit = torch.arange(hidden, dtype=torch.float32, device=device)[None, None, :]
        x = ids.to(device=device, dtype=torch.float32)[..., None] * 0.6180339 + pos * 1.37 + unit * 0.71
        return (torch.sin(x) * 1.4).to(dtype or torch.float32)

    return real_randn, randn


@contextlib.contextmanager
def comparable_randomness(trace: dict | None = None):
    """Dropout off, per-example noise; record per-example perturbation sizes and teacher sums."""
    import siftkit.run.training as training
    from siftkit.core.bregman import BregmanProximalPoint
    from siftkit.core.regularizers import AdversarialRegularizer

    original_load = training.load_model
    original_forward = AdversarialRegularizer.forward
    original_update = BregmanProximalPoint.update

    def load_model(name, num_labels=2):
        model, tokenizer = original_load(name, num_labels=num_labels)
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
        return model, tokenizer

    def forward(self, split, batch, clean_logits, z=None):
        real_randn, randn = _per_example_noise(batch)
        torch.randn = randn
        try:
            r = original_forward(self, split, batch, clean_logits, z)
        finally:
            torch.randn = real_randn
        if trace is not None and self.last_perturbation is not None:
            # Padding carries no perturbation, so the per-example sum of token norms does
            # not depend on how far a batch was padded.
            trace["perturbation"].append(self.last_perturbation.norm(dim=-1).sum(-1).tolist())
        return r

    def update(self, model):
        original_update(self, model)
        if trace is not None:
            trace["teacher"].append(sum(float(p.double().sum()) for p in self.teacher.parameters()))
            trace["teacher_state"] = {k: v.clone() for k, v in self.teacher.state_dict().items()}

    training.load_model = load_model
    AdversarialRegularizer.forward = forward
    BregmanProximalPoint.update = update
    try:
        yield
    finally:
        training.load_model = original_load
        AdversarialRegularizer.forward = original_forward
        BregmanProximalPoint.update = original_update


def _config(output_dir: Path, batch_size: int):
    from siftkit import RunConfig

    return RunConfig.from_yaml(SMOKE, output_dir=str(output_dir), per_device_train_batch_size=batch_size, **OVERRIDES)


# ------------------------------------------------------------------------------------------
# worker: one of the two processes


def _worker(out: Path) -> None:
    import datasets
    import tqdm.auto

    import siftkit.core.regularizers as regularizers
    import siftkit.run.training as training

    rank = int(os.environ["RANK"])
    trace: dict = {"perturbation": [], "teacher": [], "bars": []}

    original_tqdm = tqdm.auto.tqdm

    def recording_tqdm(*args, **kwargs):
        trace["bars"].append(bool(kwargs.get("disable", False)))
        return original_tqdm(*args, **kwargs)

    tqdm.auto.tqdm = recording_tqdm
    if rank != 0:

        def refuse(*_args, **_kwargs):
            raise AssertionError("a non-main process tried to write results.json")

        training.write_results = refuse
    with comparable_randomness(trace):
        record = training.train(_config(out / "run", B), progress=True)
    trace["datasets_bars"] = datasets.is_progress_bar_enabled()
    tqdm.auto.tqdm = original_tqdm
    torch.save(trace.pop("teacher_state"), out / f"teacher-{rank}.pt")

    # 2. Process 1 alone meets a non-finite ascent gradient once and skips R for its half
    # of the batch; process 0 does not. Both must go on in step (no DDP hang) and agree on
    # what they log.
    original_gradient = regularizers.input_gradient
    calls = [0]

    def gradient(loss, delta):
        g = original_gradient(loss, delta)
        calls[0] += 1
        return g * float("nan") if rank == 1 and calls[0] == 2 else g

    regularizers.input_gradient = gradient
    with comparable_randomness():
        cfg = _config(out / "skip", B).replace(task="cola", max_train_samples=8, max_eval_samples=4, save_model=False)
        skip = training.train(cfg, progress=False)
    regularizers.input_gradient = original_gradient
    (out / f"worker-{rank}.json").write_text(json.dumps({"record": record, "skip": skip, "trace": trace}, default=str))


# ------------------------------------------------------------------------------------------
# the test


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_two(out: Path, data_dir: Path, timeout: float = 240) -> tuple[int, str]:
    # The workers run this file as a script: its folder is on their path, tests/ (helpers.py) is not.
    tests = str(Path(__file__).resolve().parents[1])
    env = dict(
        os.environ,
        SIFTKIT_DATA_DIR=str(data_dir),
        TOKENIZERS_PARALLELISM="false",
        PYTHONPATH=os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])),
    )
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(_free_port()),
        __file__,
        str(out),
    ]
    # Own process group, so a hung run is ended with its workers (not just the launcher).
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        output, _ = proc.communicate()
        return -9, f"timed out after {timeout} s (a DDP hang?)\n{output}"
    return proc.returncode, output


def _close(a: float, b: float) -> bool:
    # Loss values are ~0.7; R and the Bregman term are ~1e-5..1e-9 differences of nearly
    # equal distributions, whose rounding is relatively larger: hence the absolute floor.
    return math.isclose(a, b, rel_tol=LOSS_RTOL, abs_tol=1e-9)


@pytest.mark.multiprocess
def test_two_processes_match_one_process(tmp_path, data_dir):
    from safetensors.torch import load_file

    from siftkit.run.training import train

    start = time.time()
    rc, output = _launch_two(tmp_path, data_dir)
    assert rc == 0, output[-6000:]
    two_s = time.time() - start
    w0, w1 = (json.loads((tmp_path / f"worker-{r}.json").read_text()) for r in (0, 1))

    trace: dict = {"perturbation": [], "teacher": [], "bars": []}
    with single_thread(), comparable_randomness(trace):  # one thread, like each worker
        ref = train(_config(tmp_path / "ref", 2 * B), progress=False)
    two = w0["record"]

    # Same global batches: 16 examples per stage, 4 optimizer steps per stage on both sides.
    assert two["meta"]["num_processes"] == 2 and ref["meta"]["num_processes"] == 1
    assert [r["global_step"] for r in two["history"]] == [r["global_step"] for r in ref["history"]] == list(range(1, 9))
    # Metrics come from predictions gathered over both processes (argmax: exact). The
    # held-out smoothness and the mean perturbation size are continuous: the smoothness
    # probes are drawn per example (the same directions wherever it is batched), so only the ~1e-7 weight
    # differences show; the size is a per-process token mean, averaged (weighting differs).
    assert two["metrics"] == w1["record"]["metrics"]
    assert two["metrics"].keys() == ref["metrics"].keys()
    for key, value in ref["metrics"].items():
        if "smoothness" in key:
            assert math.isclose(two["metrics"][key], value, rel_tol=1e-3), (key, value, two["metrics"][key])
        elif key == "mean_ascent_cosine":  # a per-token ratio: the weighting alone moves it
            assert -1 <= two["metrics"][key] <= 1 and -1 <= value <= 1
        elif key.startswith("mean_"):
            assert math.isclose(two["metrics"][key], value, rel_tol=1e-2), (key, value, two["metrics"][key])
        else:
            assert two["metrics"][key] == value, key
    # Logged values are means over the whole global batch, the same on every process.
    assert two["history"] == w1["record"]["history"]
    worst = tiny = 0.0
    for r1, r2 in zip(ref["history"], two["history"]):
        for key in ("loss", "task_loss", "adv_loss", "bregman_loss", "grad_norm", "learning_rate"):
            assert _close(r1[key], r2[key]), (key, r1[key], r2[key])
            if key in ("loss", "task_loss", "grad_norm"):
                worst = max(worst, abs(r1[key] - r2[key]) / abs(r1[key]))
            else:
                tiny = max(tiny, abs(r1[key] - r2[key]))
        # perturbation_norm is a mean over a batch's real tokens: within each process, then
        # averaged over processes, so it differs from the 1-process token mean in weighting.
        assert math.isclose(r1["perturbation_norm"], r2["perturbation_norm"], rel_tol=1e-2)
    assert any(r["adv_loss"] > 0 for r in ref["history"]) and any(r["bregman_loss"] > 0 for r in ref["history"])

    # The perturbation is per process and consistent: the 1-process batch's per-example
    # perturbations are process 0's followed by process 1's.
    p0, p1 = w0["trace"]["perturbation"], w1["trace"]["perturbation"]
    assert len(trace["perturbation"]) == len(p0) == len(p1) == 8
    for one, a, b in zip(trace["perturbation"], p0, p1):
        assert one == pytest.approx(a + b, rel=1e-5)

    # The Bregman teacher is per process and identical on both (identical weights after
    # every all-reduced step, deterministic EMA), and matches the 1-process teacher; so do
    # the trained weights.
    t0, t1 = (torch.load(tmp_path / f"teacher-{r}.pt") for r in (0, 1))
    assert w0["trace"]["teacher"] == w1["trace"]["teacher"] and len(w0["trace"]["teacher"]) == 8
    assert all(torch.equal(t0[k], t1[k]) for k in t0)
    model_ref = load_file(tmp_path / "ref" / "model" / "model.safetensors")
    model_two = load_file(tmp_path / "run" / "model" / "model.safetensors")
    for name, (a, b) in {"teacher": (trace["teacher_state"], t0), "model": (model_ref, model_two)}.items():
        assert a.keys() == b.keys()
        diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
        assert diff < WEIGHT_ATOL, (name, diff)
        print(f"{name}: max |1-process - 2-process| = {diff:.2e}")

    # Only the main process shows progress (rank 1's bars disabled, datasets' too) and
    # writes results (rank 1 would have raised on write_results).
    assert w0["trace"]["bars"] and not any(w0["trace"]["bars"])
    assert w1["trace"]["bars"] and all(w1["trace"]["bars"])
    assert w0["trace"]["datasets_bars"] and not w1["trace"]["datasets_bars"]
    assert (tmp_path / "run" / "results.json").is_file() and (tmp_path / "run" / "history.csv").is_file()

    # A non-finite ascent gradient on one process only: no hang, counted once over both.
    for w in (w0, w1):
        assert w["skip"]["meta"]["skipped_adversarial_steps"] == 1
    assert w0["skip"]["history"] == w1["skip"]["history"]
    assert [r["skipped_adversarial_steps"] for r in w0["skip"]["history"]] == [0, 1]
    print(
        f"history: max relative difference of loss/task_loss/grad_norm {worst:.2e}, max absolute "
        f"difference of adv_loss/bregman_loss/learning_rate {tiny:.2e}; 2-process run {two_s:.1f} s, "
        f"total {time.time() - start:.1f} s"
    )


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
