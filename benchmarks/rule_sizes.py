"""How big, and how adversarial, is each perturbation rule's push? Measured, not assumed.

    python benchmarks/rule_sizes.py --out benchmarks/results/rule_sizes.json [--eps 1e-5,1e-4,...]

The offline MiniLM (its classifier head freshly initialised, as at the start of fine-tuning,
with a fixed seed), one batch of 32 real tweets from the Twitter hate-speech set. For each
`adv_rule` x {SMART, SiFT} at its published defaults (K=1), and for the `projected` rule at
the size-curve settings (adv_epsilon = adv_noise_std = E, adv_step_size = 100 E): the mean
per-token ||Delta_t|| / ||z_t|| at `embedding_output`, R, and the mean per-token cosine
between the final delta and the ascent gradient (0 for a random direction, 1 for a step
along the gradient). The same noise seed for every row.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from siftkit.config import ADV_RULES, RunConfig
from siftkit.data import load
from siftkit.models import load_model
from siftkit.regularizers import REGULARIZERS
from siftkit.split import EmbeddingSplit

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
    return {"relative_perturbation": reg.last_stats["relative_perturbation"], "R": float(r.detach()),
            "cosine_delta_gradient": cos}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--eps", default=CURVE_EPS, help="adv_epsilon values of the projected size curve")
    args = p.parse_args()
    torch.manual_seed(1)
    model, tokenizer = load_model(None, num_labels=2)
    model.eval()  # no dropout: the rows differ only by the rule
    split = EmbeddingSplit(model)
    batch = tweet_batch(tokenizer)
    rows = []
    for rule in ADV_RULES:
        for algo in ("smart", "sift"):
            at = "pre_layernorm" if (rule, algo) == ("deberta", "sift") else "embedding_output"
            for at_ in sorted({at, "embedding_output"}):
                cfg = RunConfig(algo=algo, adv_rule=rule, perturb_at=at_)
                rows.append({"rule": rule, "algo": algo, "perturb_at": at_, "adv_steps": 1,
                             **measure(split, batch, cfg)})
                if rule == "mtdnn":
                    cfg0 = RunConfig(algo=algo, adv_rule=rule, adv_steps=0)
                    rows.append({"rule": rule, "algo": algo, "perturb_at": at_, "adv_steps": 0,
                                 **measure(split, batch, cfg0)})
    for eps in (float(e) for e in args.eps.split(",")):
        for algo in ("smart", "sift"):
            cfg = RunConfig(algo=algo, adv_epsilon=eps, adv_noise_std=eps, adv_step_size=100 * eps)
            rows.append({"rule": "projected (curve)", "algo": algo, "perturb_at": "embedding_output",
                         "adv_epsilon": eps, "adv_steps": 1, **measure(split, batch, cfg)})
    Path(args.out).write_text(json.dumps({"model": "all-MiniLM-L6-v2", "batch": "32 tweets", "rows": rows},
                                         indent=2) + "\n")
    for r in rows:
        eps = f" eps={r['adv_epsilon']:g}" if "adv_epsilon" in r else ""
        print(f"{r['rule']:<18}{eps:<11} {r['algo']:<6} {r['perturb_at']:<17} K={r['adv_steps']}  "
              f"rel {r['relative_perturbation']:.3g}  R {r['R']:.3g}  cos {r['cosine_delta_gradient']:.3f}")


if __name__ == "__main__":
    main()
