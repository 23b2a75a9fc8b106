"""What one training step costs: plain vs SMART vs SMART+Bregman vs SiFT (and a naive SiFT).

    python benchmarks/step_cost.py --out benchmarks/step_cost_cpu.json [--rounds 7] [--steps 1,2,3]
    python benchmarks/step_cost.py --out step_cost_h100.json --mixed-precision bf16   # on a GPU
    python benchmarks/step_cost.py --out benchmarks/results/rules_cpu.json --rules    # the adv_rule choices
    python benchmarks/step_cost.py --out benchmarks/results/methods_cpu.json --methods --threads 1  # every algo

One process, the offline MiniLM, one fixed batch of 32 real UCI sentences padded to 64
tokens. Variants are interleaved round by round (plain, smart, ..., plain, smart, ...) so
drifting machine load hits all of them alike; we report the median step time, its ratio to
plain from the same process, the forward passes counted by hooks, and peak memory.
A "step" is the whole optimizer step: forwards, backward, clipping, AdamW, teacher update.

The `naive` variant is SiFT computed the way the seed paper's code did it: a second clean
forward to get the regularizer's target instead of reusing the clean logits.

Peak memory: on CUDA, `torch.cuda.max_memory_allocated` per variant in this process; on
CPU, each variant runs again in a fresh subprocess (`--memory-only VARIANT`) that samples its
resident set during 3 steps and reports the peak above its size before the model was loaded
(weights, optimizer state and activations, as CUDA's figure counts; allocator caches make
in-process CPU figures meaningless).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from siftkit import methods
from siftkit.data.loaders import load
from siftkit.methods.adversarial import SiftMethod
from siftkit.run.config import RunConfig
from siftkit.run.models import load_model
from siftkit.run.objective import build_method

POINTS = ("embedding_output", "word_embeddings", "pre_layernorm")


class NaiveSift(SiftMethod):
    """The seed paper's cost profile: an extra clean forward for the regularizer's target."""

    def objective(self, model, batch):
        from siftkit.core.split import model_inputs

        reg = self.regularizer
        logits = model(**model_inputs(batch)).logits
        task = self.task_loss(logits, batch["labels"])
        target, z = self.split.forward_capture(batch, reg.perturb_at)  # the redundant forward
        r = reg(self.split, batch, target, z)
        return task + reg.adv_weight * r, {}


def methods_table(args) -> None:
    """Every method at its published defaults on 5 P2 tweets (`siftkit.run.method_cost`: each its
    own copy of MiniLM and AdamW, steps interleaved); the JSON and one line per method."""
    from siftkit.run.method_cost import method_step_times, p2_tweets

    texts, labels = p2_tweets(5)
    rows = method_step_times(method_variants(), texts, labels, warmup=args.warmup, steps=args.rounds)
    record = {
        "device": "cpu",
        "torch_threads": torch.get_num_threads(),
        "batch": "5 P2 tweets (padded to the longest)",
        "steps": args.rounds,
        "warmup": args.warmup,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    for name, r in rows.items():
        print(
            f"{name:<8} {r['mean_s'] * 1000:8.1f} ms  x{r['ratio_to_plain']:.2f}  updates/batch "
            f"{r['updates_per_batch']}  rel {r['mean_relative_perturbation']:.3g}"
        )


def method_variants() -> dict[str, dict]:
    """Every registered method (algo) at its published defaults (SMART with its Bregman term)."""
    return {algo: dict(algo=algo) for algo in methods.names()}


def rule_variants() -> dict[str, dict]:
    """plain and each perturbation rule x {SMART, SiFT} at K=1, without Bregman."""
    from siftkit.run.config import ADV_RULES

    out = {"plain": dict(algo="plain")}
    for rule in ADV_RULES:
        for algo in ("smart", "sift"):
            out[f"{algo} {rule}"] = dict(algo=algo, adv_rule=rule, bregman_weight=0.0)
    return out


def variants(steps: list[int]) -> dict[str, dict]:
    out = {"plain": dict(algo="plain")}
    for k in steps:
        out[f"smart K={k}"] = dict(algo="smart", adv_steps=k, bregman_weight=0.0)
        out[f"smart+bregman K={k}"] = dict(algo="smart", adv_steps=k, bregman_weight=1.0)
        for at in POINTS:
            out[f"sift@{at} K={k}"] = dict(algo="sift", adv_steps=k, perturb_at=at)
        out[f"naive sift K={k}"] = dict(algo="sift", adv_steps=k, naive=True)
    return out


def make_batch(tokenizer, device, batch_size=32, length=64):
    pool = load("uci_sentiment")["pool"]
    texts, labels = pool["text"][:batch_size], pool["label"][:batch_size]
    enc = tokenizer(texts, padding="max_length", truncation=True, max_length=length, return_tensors="pt")
    enc["labels"] = torch.tensor(labels)
    return {k: v.to(device) for k, v in enc.items()}


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, *_):
        self.n += 1


def build(spec: dict, model):
    spec = dict(spec)
    naive = spec.pop("naive", False)
    cfg = RunConfig.from_dict(spec)
    return NaiveSift(model, cfg) if naive else build_method(model, cfg)


class StepContext:
    """The loop's side of a training step (`siftkit.methods.base.BatchContext`), as the native
    loop does it: backward, clip at 1.0, AdamW step, zero the gradients; counts the backwards."""

    def __init__(self, model, optimizer, autocast):
        self.model, self.optimizer, self._autocast = model, optimizer, autocast
        self.backwards = 0

    def autocast(self):
        return self._autocast()

    def backward(self, loss) -> bool:
        loss.backward()
        self.backwards += 1
        return True

    def update(self) -> bool:
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return True


def one_step(method, model, optimizer, batch, autocast) -> int:
    """One batch through the method (its forwards, backwards and updates); returns its backwards."""
    ctx = StepContext(model, optimizer, autocast)
    method.train_batch(model, batch, ctx)
    return ctx.backwards


def setup(device: str, mixed_precision: str, shape: tuple[int, int] = (32, 64)):
    torch.manual_seed(0)
    model, tok = load_model(None)
    model.to(device).train()
    batch = make_batch(tok, device, *shape)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(mixed_precision)
    dev_type = "cuda" if device.startswith("cuda") else "cpu"

    def autocast():
        return torch.autocast(dev_type, dtype=dtype, enabled=dtype is not None)

    return model, batch, optimizer, autocast


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_only(
    name: str, spec: dict, device: str, mixed_precision: str, shape: tuple[int, int], steps: int = 3
) -> None:
    """Peak resident memory while training, above the process's size before the model loaded.

    Like CUDA's max_memory_allocated this counts weights, optimizer state and activations;
    sampled every millisecond from /proc, since CPU torch keeps no allocator statistics.
    """
    import threading

    before = _rss_mib()
    model, batch, optimizer, autocast = setup(device, mixed_precision, shape)
    objective = build(spec, model)
    peak, done = [before], threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mib())
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for _ in range(steps):
        one_step(objective, model, optimizer, batch, autocast)
    done.set()
    thread.join()
    print(json.dumps({"variant": name, "peak_rss_growth_mib": peak[0] - before}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--steps", default="1,2,3", help="K values")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--mixed-precision", default="no", choices=["no", "bf16", "fp16"])
    p.add_argument("--memory-only", default=None, help=argparse.SUPPRESS)
    p.add_argument("--no-memory", action="store_true", help="skip the CPU memory subprocesses")
    p.add_argument("--rules", action="store_true", help="compare the perturbation rules (K=1) instead")
    p.add_argument("--methods", action="store_true", help="compare every method at its defaults instead")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--batch", default="32x64", help="examples x tokens of the fixed batch")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    specs = (
        method_variants()
        if args.methods
        else rule_variants()
        if args.rules
        else variants([int(k) for k in args.steps.split(",")])
    )
    if args.methods:
        methods_table(args)
        return
    shape = tuple(int(x) for x in args.batch.split("x"))
    if args.memory_only:
        memory_only(args.memory_only, specs[args.memory_only], args.device, args.mixed_precision, shape)
        return

    model, batch, optimizer, autocast = setup(args.device, args.mixed_precision, shape)
    objectives = {name: build(spec, model) for name, spec in specs.items()}
    counters = {}
    model_counter = Counter()
    model.register_forward_pre_hook(model_counter)
    for name, obj in objectives.items():
        counters[name] = Counter()
        if getattr(obj, "bregman", None) is not None:
            obj.bregman.teacher.register_forward_pre_hook(counters[name])

    times = {name: [] for name in specs}
    forwards, backward_counts = {}, {}
    cuda_peak = {}
    for r in range(args.warmup + args.rounds):
        for name, obj in objectives.items():
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            sync(args.device)
            model_counter.n, counters[name].n = 0, 0
            t0 = time.perf_counter()
            backwards = one_step(obj, model, optimizer, batch, autocast)
            sync(args.device)
            dt = time.perf_counter() - t0
            forwards[name] = {"model": model_counter.n, "teacher": counters[name].n}
            backward_counts[name] = backwards
            if r >= args.warmup:
                times[name].append(dt)
                if args.device.startswith("cuda"):
                    cuda_peak[name] = max(cuda_peak.get(name, 0), torch.cuda.max_memory_allocated() / 2**20)

    memory = {}
    if args.device.startswith("cuda"):
        memory = cuda_peak
    elif not args.no_memory:
        for name in specs:
            outp = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--out",
                    os.devnull,
                    "--memory-only",
                    name,
                    "--device",
                    args.device,
                    "--mixed-precision",
                    args.mixed_precision,
                    "--steps",
                    args.steps,
                    "--batch",
                    args.batch,
                    *(["--threads", str(args.threads)] if args.threads else []),
                    *(["--rules"] if args.rules else []),
                    *(["--methods"] if args.methods else []),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            memory[name] = json.loads(outp.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"]

    plain = statistics.median(times["plain"])
    rows = []
    for name in specs:
        med = statistics.median(times[name])
        rows.append(
            {
                "variant": name,
                "median_step_s": med,
                "ratio_to_plain": med / plain,
                "forwards": forwards[name],
                "backwards": backward_counts[name],
                "peak_memory_mib": memory.get(name),
                "peak_memory_ratio_to_plain": (
                    memory[name] / memory["plain"] if memory.get(name) and memory.get("plain") else None
                ),
            }
        )
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    record = {
        "device": device_name,
        "mixed_precision": args.mixed_precision,
        "batch": list(shape),
        "rounds": args.rounds,
        "torch_threads": torch.get_num_threads(),
        "memory_measure": "cuda max_memory_allocated (MiB)"
        if args.device.startswith("cuda")
        else "peak RSS during 3 steps above the process before model load, fresh process (MiB)",
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    width = max(len(r["variant"]) for r in rows)
    print(
        f"device {device_name}, mixed precision {args.mixed_precision}, batch {args.batch}, "
        f"{args.rounds} rounds (median)"
    )
    for r in rows:
        mem = f"{r['peak_memory_mib']:.0f} MiB" if r["peak_memory_mib"] is not None else "–"
        print(
            f"{r['variant']:<{width}}  {r['median_step_s'] * 1000:8.1f} ms  x{r['ratio_to_plain']:.2f}  "
            f"fwd {r['forwards']['model']}+{r['forwards']['teacher']}  bwd {r['backwards']}  mem {mem}"
        )


if __name__ == "__main__":
    main()
