"""Held-out smoothness probes, per-source accuracy and the run's mean perturbation size."""

import math
from collections import Counter

import pytest
import torch
from helpers import TEXTS, make_batch, tiny_model

from siftkit.core.smoothness import PROBE_SIZES, metric_name, probe_divergences, random_probe
from siftkit.core.split import EmbeddingSplit
from siftkit.run.config import RunConfig
from siftkit.run.protocols import uci_split
from siftkit.run.training import train


def test_probe_has_exactly_the_relative_size_and_spares_padding():
    z = torch.randn(3, 7, 16) * torch.linspace(0.5, 4.0, 7).view(1, 7, 1)  # tokens of different norms
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 5:] = False
    delta = random_probe(z, mask, 0.3, seeds=[5, 6, 7])
    ratio = delta.norm(dim=-1) / z.norm(dim=-1)
    torch.testing.assert_close(ratio[mask], torch.full_like(ratio[mask], 0.3))
    assert (delta[~mask] == 0).all()
    torch.testing.assert_close(delta, random_probe(z, mask, 0.3, seeds=[5, 6, 7]))  # fixed by its seeds
    assert not torch.allclose(delta, random_probe(z, mask, 0.3, seeds=[5, 6, 8]))
    with pytest.raises(ValueError, match="one seed per example: 2 seeds for a batch of 3"):
        random_probe(z, mask, 0.3, seeds=[5, 6])


def test_probe_of_an_example_does_not_depend_on_its_batch_or_padding():
    """An example's directions follow its own seed: alone, or padded to any length on either
    side in a batch with others, its real tokens get the same probe."""
    z = torch.randn(1, 4, 16)
    alone = random_probe(z, torch.ones(1, 4, dtype=torch.bool), 0.3, seeds=[11])
    padded = torch.cat([torch.randn(1, 9, 16), torch.cat([z, torch.randn(1, 5, 16)], dim=1)])
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0], mask[1, :4] = True, True
    right = random_probe(padded, mask, 0.3, seeds=[3, 11])
    torch.testing.assert_close(right[1, :4], alone[0], rtol=0, atol=0)
    left = torch.cat([torch.randn(1, 5, 16), z], dim=1)  # the same example, padded on the left
    left_mask = torch.zeros(1, 9, dtype=torch.bool)
    left_mask[0, 5:] = True
    torch.testing.assert_close(random_probe(left, left_mask, 0.3, seeds=[11])[0, 5:], alone[0], rtol=0, atol=0)


def test_probe_divergences_are_fixed_nonnegative_and_zero_without_a_push():
    model = tiny_model("bert")
    split = EmbeddingSplit(model)
    batch = make_batch(TEXTS)
    logits, first = probe_divergences(split, batch, example_indices=[0, 1, 2])
    _, again = probe_divergences(split, batch, example_indices=[0, 1, 2])
    torch.testing.assert_close(logits, model(**batch).logits)
    assert set(first) == set(PROBE_SIZES)
    for size in PROBE_SIZES:
        assert first[size].shape == (len(TEXTS),)
        assert (first[size] >= 0).all() and first[size].sum() > 0
        torch.testing.assert_close(first[size], again[size])  # the same probes every call
    # each example's divergence is its own: batched in another order, alone, it is the same
    reordered = make_batch([TEXTS[2], TEXTS[0]])
    _, moved = probe_divergences(split, reordered, example_indices=[2, 0])
    _, alone = probe_divergences(split, make_batch([TEXTS[1]]), example_indices=[1])
    for size in PROBE_SIZES:
        torch.testing.assert_close(moved[size], first[size][[2, 0]], rtol=1e-4, atol=1e-9)
        torch.testing.assert_close(alone[size], first[size][[1]], rtol=1e-4, atol=1e-9)
    _, none = probe_divergences(split, batch, example_indices=[0, 1, 2], sizes=(0.0,))
    assert float(none[0.0].abs().max()) == 0.0


@pytest.mark.slow
def test_train_records_smoothness_per_source_accuracy_and_mean_size(smoke_params, tmp_path):
    cfg = RunConfig.from_yaml(
        smoke_params,
        algo="sift",
        task="twitter_to_uci",
        output_dir=str(tmp_path / "run"),
        max_eval_samples=None,
        uci_train_size=20,
    )
    record = train(cfg, progress=False)
    m = record["metrics"]
    for name in ("twitter_val", "uci_zero_shot", "uci_test"):
        for size in PROBE_SIZES:
            assert math.isfinite(m[metric_name(name, size)]) and m[metric_name(name, size)] >= 0
    # per-source accuracies weighted by each source's share of the test set give the overall one
    _, test = uci_split(cfg)
    counts = Counter(test["source"])
    assert set(counts) == {"amazon", "imdb", "yelp"}
    overall = sum(m[f"uci_test_accuracy_{s}"] * n for s, n in counts.items()) / sum(counts.values())
    assert overall == pytest.approx(m["uci_test_accuracy"], abs=1e-12)
    # the run's size is the mean of what its history logged
    sizes = [row["relative_perturbation"] for row in record["history"]]
    assert m["mean_relative_perturbation"] == pytest.approx(sum(sizes) / len(sizes))
    assert m["mean_relative_perturbation"] > 0 and "mean_ascent_cosine" in m


def test_smoothness_probes_can_be_switched_off(smoke_params, tmp_path):
    cfg = RunConfig.from_yaml(
        smoke_params, algo="plain", task="cola", output_dir=str(tmp_path / "run"), eval_smoothness=False
    )
    metrics = train(cfg, progress=False)["metrics"]
    assert "in_domain_dev_mcc" in metrics and not any("smoothness" in k for k in metrics)
