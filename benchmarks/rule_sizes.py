"""How big, and how adversarial, is each perturbation rule's push? Measured, not assumed.

    python benchmarks/rule_sizes.py --out benchmarks/results/rule_sizes.json [--eps 1e-5,1e-4,...]
    python benchmarks/rule_sizes.py --target-size 0.59 --algo sift --adv_epsilon 0.6
    python benchmarks/rule_sizes.py --methods --out benchmarks/results/method_sizes_cpu.json

The second form calibrates the random-noise control at a matched measured size
(`siftkit.run.calibration`): the `adv_noise_std` for which `adv_steps=0` inside the ball of
`adv_epsilon` reaches the target size, beside the size the ascent reaches at that epsilon.

The offline MiniLM (its classifier head freshly initialised, as at the start of fine-tuning,
with a fixed seed), one batch of 32 real tweets from the Twitter hate-speech set. For each
`adv_rule` x {SMART, SiFT} at its published defaults (K=1), and for the `projected` rule at
the size-curve settings (adv_epsilon = adv_noise_std = E, adv_step_size = 100 E): the mean
per-token ||Delta_t|| / ||z_t|| at `embedding_output`, R, and the mean per-token cosine
between the final delta and the ascent gradient (0 for a random direction, 1 for a step
along the gradient). The same noise seed for every row.

``--methods``: every registered method that perturbs an input, at its published defaults, on the
same batch: one training batch through the method itself (its own forwards and backwards, no
update), and the sizes it logs (`siftkit.methods.base.perturbation_stats`) at its own point.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from siftkit import methods
from siftkit.core.regularizers import REGULARIZERS
from siftkit.core.split import EmbeddingSplit
from siftkit.data.loaders import load
from siftkit.methods.base import MeasureContext
from siftkit.run.calibration import matched_noise_std, measured_size
from siftkit.run.config import ADV_RULES, RunConfig
from siftkit.run.models import load_model
from siftkit.run.objective import build_method

CURVE_EPS = "1e-5,1e-4,1e-3,1e-2,3e-2,0.1,0.3,1.0"


def tweet_batch(tokenizer, n: int = 32):
    tweets = load("twitter_hate")["train"]
    enc = tokenizer(tweets["text"][:n], padding=True, truncation=True, max_length=128, return_tensors="pt")
    return dict(enc)


def measure(split: EmbeddingSplit, batch, cfg: RunConfig, seed: int = 0) -> dict[str, float]:
    reg = REGULARIZERS[cfg.algo].from_config(cfg)
    with torch.no_grad():
        logits, z = split.forward_capture(batch, cfg.perturb_at)
    torch.manual_seed(seed)
    r = reg(split, batch, logits, z)
    mask = batch["attention_mask"].bool()
    cos = float("nan")
    if reg.last_gradient is not None:
        c = torch.nn.functional.cosine_similarity(reg.last_delta, reg.last_gradient, dim=-1)
        cos = float(c[mask].mean())
    return {
        "relative_perturbation": reg.last_stats["relative_perturbation"],
        "R": float(r.detach()),
        "cosine_delta_gradient": cos,
    }


def measure_methods(model, batch, seed: int = 0) -> list[dict]:
    """One batch of each input-perturbing method at its defaults: the sizes it logs."""
    rows = []
    n = batch["input_ids"].shape[0]
    labelled = {**batch, "labels": torch.tensor(load("twitter_hate")["train"]["label"][:n])}
    for algo in methods.names():
        cfg = RunConfig(algo=algo)
        method = build_method(model, cfg)
        if not method.perturbs_input:
            continue
        torch.manual_seed(seed)
        _, parts = method.train_batch(model, labelled, MeasureContext(model))
        rows.append(
            {
                "algo": algo,
                "perturb_at": cfg.perturb_at,
                "algo_args": cfg.algo_args,
                **{
                    k: parts.get(k) for k in ("relative_perturbation", "perturbation_norm", "ascent_cosine", "adv_loss")
                },
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default=None)
    p.add_argument("--eps", default=CURVE_EPS, help="adv_epsilon values of the projected size curve")
    p.add_argument(
        "--target-size",
        default=None,
        help="calibrate adv_noise_std so that adv_steps=0 reaches this measured size; 'ascent': the "
        "size the ascent reaches at --adv_epsilon",
    )
    p.add_argument("--algo", default="sift", choices=("smart", "sift"))
    p.add_argument("--adv_epsilon", type=float, default=None, help="the ball (default: the target size)")
    p.add_argument("--methods", action="store_true", help="every input-perturbing method at its defaults")
    args = p.parse_args()
    if args.target_size is None and args.out is None:
        p.error("give --out (the table of rules and sizes) or --target-size (a matched-size noise control)")
    torch.manual_seed(1)
    model, tokenizer = load_model(None, num_labels=2)
    model.eval()  # no dropout: the rows differ only by the rule
    split = EmbeddingSplit(model)
    batch = tweet_batch(tokenizer)
    if args.target_size is not None:
        calibrate(split, batch, args)
        return
    if args.methods:
        rows = measure_methods(model, batch)
        Path(args.out).write_text(
            json.dumps({"model": "all-MiniLM-L6-v2", "batch": "32 tweets", "dropout": "off", "rows": rows}, indent=2)
            + "\n"
        )
        for r in rows:
            cos = r["ascent_cosine"]
            print(
                f"{r['algo']:<8} {r['perturb_at']:<17} rel {r['relative_perturbation']:.3g}  "
                f"cos {'–' if cos is None else f'{cos:.3f}'}"
            )
        return
    rows = []
    for rule in ADV_RULES:
        for algo in ("smart", "sift"):
            at = "pre_layernorm" if (rule, algo) == ("deberta", "sift") else "embedding_output"
            for at_ in sorted({at, "embedding_output"}):
                cfg = RunConfig(algo=algo, adv_rule=rule, perturb_at=at_)
                rows.append(
                    {"rule": rule, "algo": algo, "perturb_at": at_, "adv_steps": 1, **measure(split, batch, cfg)}
                )
                if rule == "mtdnn":
                    cfg0 = RunConfig(algo=algo, adv_rule=rule, adv_steps=0)
                    rows.append(
                        {"rule": rule, "algo": algo, "perturb_at": at_, "adv_steps": 0, **measure(split, batch, cfg0)}
                    )
    for eps in (float(e) for e in args.eps.split(",")):
        for algo in ("smart", "sift"):
            cfg = RunConfig(algo=algo, adv_epsilon=eps, adv_noise_std=eps, adv_step_size=100 * eps)
            rows.append(
                {
                    "rule": "projected (curve)",
                    "algo": algo,
                    "perturb_at": "embedding_output",
                    "adv_epsilon": eps,
                    "adv_steps": 1,
                    **measure(split, batch, cfg),
                }
            )
    Path(args.out).write_text(
        json.dumps({"model": "all-MiniLM-L6-v2", "batch": "32 tweets", "rows": rows}, indent=2) + "\n"
    )
    for r in rows:
        eps = f" eps={r['adv_epsilon']:g}" if "adv_epsilon" in r else ""
        print(
            f"{r['rule']:<18}{eps:<11} {r['algo']:<6} {r['perturb_at']:<17} K={r['adv_steps']}  "
            f"rel {r['relative_perturbation']:.3g}  R {r['R']:.3g}  cos {r['cosine_delta_gradient']:.3f}"
        )


def calibrate(split: EmbeddingSplit, batch, args) -> None:
    if args.target_size != "ascent":
        args.target_size = float(args.target_size)
    elif args.adv_epsilon is None:
        raise SystemExit("--target-size ascent needs --adv_epsilon")
    eps = args.adv_epsilon if args.adv_epsilon is not None else args.target_size
    ascent = RunConfig(
        algo=args.algo,
        adv_epsilon=eps,
        adv_noise_std=eps,
        adv_step_size=100 * eps,
        bregman_weight=0 if args.algo == "smart" else None,
    )
    same_std = measured_size(split, batch, ascent.replace(adv_steps=0, adv_noise_std=eps, adv_epsilon=eps))
    if args.target_size == "ascent":
        args.target_size = measured_size(split, batch, ascent)
    std, size = matched_noise_std(split, batch, ascent, args.target_size)
    row = {
        "algo": args.algo,
        "adv_epsilon": eps,
        "target_size": args.target_size,
        "ascent_size": measured_size(split, batch, ascent),
        "noise_size_at_std_eps": same_std,
        "adv_noise_std": std,
        "noise_size": size,
    }
    print(
        f"{args.algo}, adv_epsilon={eps:g}: the ascent (adv_step_size={100 * eps:g}) measures "
        f"{row['ascent_size']:.3g}; noise with adv_noise_std={eps:g} measures {same_std:.3g}; "
        f"adv_steps=0 --adv_noise_std {std:.4g} measures {size:.3g} (target {args.target_size:g})"
    )
    if args.out:
        Path(args.out).write_text(
            json.dumps({"model": "all-MiniLM-L6-v2", "batch": "32 tweets", **row}, indent=2) + "\n"
        )


if __name__ == "__main__":
    main()
