"""Where the time of one training run goes: model load, data load, each stage's training, each
evaluation (tokenization / clean forward / smoothness probes / the rest), checkpoints.

    python benchmarks/run_breakdown.py --params params/twitter_to_uci.yaml --algo sift
    python benchmarks/run_breakdown.py --max_eval_samples 300 --uci_train_size 50 --max_train_samples 100
    python benchmarks/run_breakdown.py --set eval_smoothness=false --out breakdown.json

One process runs `siftkit.train` once, with timers wrapped around the parts of the run (the
kit's code is not changed; the wrappers are installed on the module attributes the run looks
up, so the same script times any version of the kit that has them). Times are exclusive: a
region's row does not include the rows nested in it. Evaluations are timed one eval set at a
time; inside one:

- ``tokenize``: turning the eval set's texts into token ids (a cached lookup where the kit
  caches tokenizations);
- ``clean forward``: the model's forwards that give the predictions (with the probes on,
  the forward that also captures the tensor to perturb);
- ``probes``: the smoothness probes' forwards from a perturbed embedding output, and the
  drawing of the probes;
- the eval set's own row (``eval <name>``): the rest, i.e. batching, padding, gathering, metrics.

The padded token count of each region (token positions the model's forwards ran on) is
counted by a hook on the model. On a loaded machine the seconds are noisy: compare shares
and ratios measured in one process, and report the load (printed before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]


class Timers:
    """Exclusive wall time and padded-token counts per nested region (a path of labels)."""

    def __init__(self):
        self.seconds: dict[tuple[str, ...], float] = defaultdict(float)
        self.tokens: dict[tuple[str, ...], int] = defaultdict(int)
        self.calls: dict[tuple[str, ...], int] = defaultdict(int)
        self._stack: list[list] = []  # [path, start, time spent in children]

    @property
    def path(self) -> tuple[str, ...]:
        return self._stack[-1][0] if self._stack else ()

    @contextlib.contextmanager
    def region(self, label: str):
        self.enter(label)
        try:
            yield
        finally:
            self.leave()

    def enter(self, label: str) -> None:
        self._stack.append([self.path + (label,), time.perf_counter(), 0.0])

    def leave(self) -> None:
        path, start, children = self._stack.pop()
        elapsed = time.perf_counter() - start
        self.seconds[path] += elapsed - children
        self.calls[path] += 1
        if self._stack:
            self._stack[-1][2] += elapsed

    def count_tokens(self, n: int) -> None:
        self.tokens[self.path] += n


def _wrap(owner, name: str, wrapper_factory) -> None:
    original = getattr(owner, name)
    setattr(owner, name, functools.wraps(original)(wrapper_factory(original)))


def install(timers: Timers) -> None:
    """Wrap the run's parts (whichever of them this version of the kit has)."""
    import siftkit.run.training as training
    from siftkit.core.split import EmbeddingSplit

    def timed(label):
        def factory(original):
            def wrapper(*args, **kwargs):
                with timers.region(label):
                    return original(*args, **kwargs)

            return wrapper

        return factory

    def in_eval(label):
        # Only inside an evaluation: training's own forwards go through the same code.
        def factory(original):
            def wrapper(*args, **kwargs):
                if not any(p.startswith("eval ") for p in timers.path):
                    return original(*args, **kwargs)
                with timers.region(label):
                    return original(*args, **kwargs)

            return wrapper

        return factory

    _wrap(training, "load_model", _load_model_factory(timers))
    _wrap(training, "build_stages", timed("data load"))
    # Checkpoints: a module function in older versions of the kit, RunState.save since.
    if hasattr(training, "_save"):
        _wrap(training, "_save", timed("checkpoint save"))
    else:
        _wrap(training.RunState, "save", timed("checkpoint save"))

    def run_stage(original):
        def wrapper(stage_index, stage, *args, **kwargs):
            with timers.region(f"train {stage.name}"):
                return original(stage_index, stage, *args, **kwargs)

        return wrapper

    _wrap(training, "_run_stage", run_stage)

    def evaluate(original):
        # One eval set at a time, so each gets its own rows (evaluate treats them independently).
        def wrapper(model, evals, *args, **kwargs):
            metrics = {}
            for name, ds in evals.items():
                with timers.region(f"eval {name}"):
                    metrics.update(original(model, {name: ds}, *args, **kwargs))
            return metrics

        return wrapper

    _wrap(training, "evaluate", evaluate)
    for module_name in ("siftkit.run.training", "siftkit.run.evaluation"):
        module = sys.modules.get(module_name) or _try_import(module_name)
        if module is None:
            continue
        for name in ("tokenize", "encoded"):
            if hasattr(module, name):
                _wrap(module, name, timed("tokenize"))
    _wrap(EmbeddingSplit, "forward_capture", in_eval("clean forward"))
    _wrap(EmbeddingSplit, "forward_from", in_eval("probes"))
    import siftkit.core.smoothness as smoothness

    _wrap(smoothness, "random_probe", in_eval("probes"))


def _try_import(name: str):
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


def _load_model_factory(timers: Timers):
    """Time the model load, and hook the model to time/count the forwards made in an evaluation."""

    def factory(original):
        def wrapper(*args, **kwargs):
            with timers.region("model load"):
                model, tokenizer = original(*args, **kwargs)

            def pre(_module, args, kwargs):
                in_eval = any(p.startswith("eval ") for p in timers.path)
                ids = kwargs.get("input_ids", args[0] if args else None)
                if in_eval and ids is not None:  # training's batches are not what is compared
                    timers.count_tokens(int(ids.numel()))
                # A forward made in an evaluation outside the probes is a clean forward
                # (with the probes off, the kit calls the model directly).
                if in_eval and timers.path[-1].startswith("eval "):
                    timers.enter("clean forward")
                    _forward_frames.append(True)
                else:
                    _forward_frames.append(False)

            def post(_module, _args, _kwargs, _output):
                if _forward_frames.pop():
                    timers.leave()

            _forward_frames: list[bool] = []
            model.register_forward_pre_hook(pre, with_kwargs=True)
            model.register_forward_hook(post, with_kwargs=True)
            return model, tokenizer

        return wrapper

    return factory


def table(timers: Timers, total: float) -> list[dict]:
    rows = []
    for path in sorted(timers.seconds, key=_order(timers)):
        rows.append(
            {
                "part": " / ".join(path),
                "seconds": round(timers.seconds[path], 3),
                "share": round(timers.seconds[path] / total, 4),
                "calls": timers.calls[path],
                "padded_tokens": timers.tokens.get(path, 0),
            }
        )
    accounted = sum(timers.seconds.values())
    rows.append(
        {
            "part": "other (setup, results)",
            "seconds": round(total - accounted, 3),
            "share": round((total - accounted) / total, 4),
            "calls": 1,
            "padded_tokens": 0,
        }
    )
    return rows


def _order(timers: Timers):
    first_seen = {}
    for i, path in enumerate(timers.seconds):  # dicts keep insertion order: the run's order
        first_seen.setdefault(path[0], i)
    return lambda path: (first_seen[path[0]], len(path), path)


def _print(rows: list[dict], total: float, load: dict) -> None:
    width = max(len(r["part"]) for r in rows)
    print(f"\n{'part':<{width}}  {'seconds':>9}  {'share':>6}  {'padded tokens':>13}")
    for r in rows:
        tokens = f"{r['padded_tokens']:,}" if r["padded_tokens"] else ""
        print(f"{r['part']:<{width}}  {r['seconds']:>9.2f}  {100 * r['share']:>5.1f}%  {tokens:>13}")
    print(f"{'total (train() wall time)':<{width}}  {total:>9.2f}  100.0%")
    print(f"load average (1/5/15 min) before: {load['before']}, after: {load['after']}")


def eval_ratio(params: str, overrides: dict, rounds: int) -> dict:
    """One eval set (P2's uci_test) evaluated with the probes on, length-sorted batches vs
    batches in dataset order (what the kit did before), interleaved round by round in this
    process: the ratio does not drift with the machine's load as two separate runs do."""
    import siftkit.run.evaluation as evaluation
    from siftkit.run.config import RunConfig
    from siftkit.run.models import load_model
    from siftkit.run.protocols import build_stages
    from siftkit.run.training import _make_accelerator

    cfg = RunConfig.from_yaml(params, **overrides)
    ds = build_stages(cfg)[-1].evals["uci_test"]
    model, tokenizer = load_model(cfg.model_name, num_labels=2)
    accelerator = _make_accelerator(cfg)
    sorted_batches = evaluation.length_batches

    def in_order(lengths, batch_size):
        return [np.arange(i, min(i + batch_size, len(lengths))) for i in range(0, len(lengths), batch_size)]

    times: dict[str, list[float]] = {"dataset order": [], "length-sorted": []}
    results = {}
    for _ in range(rounds):
        for name, batches in (("dataset order", in_order), ("length-sorted", sorted_batches)):
            evaluation.length_batches = batches
            start = time.perf_counter()
            results[name] = evaluation.evaluate(model, {"uci_test": ds}, tokenizer, cfg, accelerator)
            times[name].append(time.perf_counter() - start)
    evaluation.length_batches = sorted_batches
    same = {k: v for k, v in results["dataset order"].items() if "smoothness" not in k} == {
        k: v for k, v in results["length-sorted"].items() if "smoothness" not in k
    }
    median = {k: float(np.median(v)) for k, v in times.items()}
    out = {
        "examples": len(ds),
        "rounds": rounds,
        "seconds": times,
        "median_s": median,
        "ratio": median["length-sorted"] / median["dataset order"],
        "same_accuracy_and_mcc": same,
    }
    print(json.dumps(out, indent=1))
    return out


def main(argv=None) -> dict:
    from siftkit.cli.main import parse_field_value
    from siftkit.run.config import RunConfig
    from siftkit.run.training import train

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--params", default=str(REPO / "params" / "twitter_to_uci.yaml"))
    p.add_argument("--algo", default="sift")
    p.add_argument("--max_eval_samples", type=int)
    p.add_argument("--max_train_samples", type=int)
    p.add_argument("--uci_train_size", type=int)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="any other RunConfig field, e.g. --set eval_smoothness=false",
    )
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--out", help="write the table and the run's metrics to this JSON file")
    p.add_argument(
        "--eval-ratio",
        type=int,
        metavar="ROUNDS",
        help="instead of a run: time one uci_test evaluation with length-sorted batches vs "
        "batches in dataset order, interleaved for ROUNDS rounds (the offline model as loaded)",
    )
    args = p.parse_args(argv)

    overrides = {"algo": args.algo}
    for name in ("max_eval_samples", "max_train_samples", "uci_train_size"):
        if getattr(args, name) is not None:
            overrides[name] = getattr(args, name)
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes FIELD=VALUE, got {item!r}")
        overrides[name] = parse_field_value(name, value)
    torch.set_num_threads(args.threads)
    if args.eval_ratio:
        result = eval_ratio(args.params, overrides, args.eval_ratio)
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        return result

    timers = Timers()
    install(timers)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig.from_yaml(args.params, output_dir=str(Path(tmp) / "run"), **overrides)
        load = {"before": [round(x, 2) for x in os.getloadavg()]}
        start = time.perf_counter()
        record = train(cfg, progress=False)
        total = time.perf_counter() - start
        load["after"] = [round(x, 2) for x in os.getloadavg()]
    rows = table(timers, total)
    _print(rows, total, load)
    result = {
        "overrides": overrides,
        "threads": args.threads,
        "total_s": round(total, 3),
        "load": load,
        "rows": rows,
        "metrics": record["metrics"],
    }
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
