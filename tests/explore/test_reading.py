"""A run's curves and accuracies read out in sentences (siftkit.explore.reading), on synthetic
records whose numbers are known: every sentence must say what those numbers say."""

import math

import numpy as np

from siftkit.explore.reading import read_curves, read_zero_shot


def _history(stages, *, r=None, bregman=None, reg=None, rel=None):
    """Rows of a two-stage history: `stages` maps a stage name to its task losses; r, bregman,
    reg and rel map a stage name to that column's values (absent: column left out)."""
    rows, step = [], 0
    for name, losses in stages.items():
        for i, loss in enumerate(losses):
            step += 10
            row = {"stage": name, "global_step": step, "task_loss": loss}
            for col, values in (
                ("adv_loss", r),
                ("bregman_loss", bregman),
                ("reg_loss", reg),
                ("relative_perturbation", rel),
            ):
                if values is not None:
                    row[col] = values[name][i]
            rows.append(row)
    return rows


def _record(algo, history, **config):
    return {"config": {"algo": algo, "task": "twitter_to_uci", **config}, "history": history}


TASK = {"twitter": list(np.linspace(0.69, 0.45, 20)), "uci": list(np.linspace(0.95, 0.60, 10))}


def test_plain_has_no_regularizer_and_the_label_flip_start_is_said():
    lines = read_curves(_record("plain", _history(TASK, r={"twitter": [0.0] * 20, "uci": [0.0] * 10})))
    text = "\n".join(lines)
    assert lines[0].startswith(
        "twitter (optimizer steps 10–200, 20 logged points): the task loss goes from 0.684 "
        "to 0.456 nats (means of the first and last 2 points)."
    )
    assert text.count("Plain fine-tuning has no regularizer") == 2
    assert "R, the regularizer" not in text and "pull on the weights" not in text and "The push" not in text
    # stage 2 starts above stage 1's end and above ln 2: worse than no opinion
    assert "It starts above the end of twitter (0.456) and above ln 2 = 0.693" in text
    assert "worse than having no opinion" in text


def test_a_stage_that_starts_below_ln2_is_not_called_worse_than_no_opinion():
    task = {"twitter": [0.69, 0.5, 0.4, 0.3], "uci": [0.6, 0.5, 0.4, 0.35]}
    text = "\n".join(read_curves(_record("plain", _history(task))))
    assert "It starts above the end of twitter (0.300), at or below ln 2 = 0.693" in text
    assert "the task loss goes from 0.690 to 0.300 nats (its first and last points)." in text
    assert "worse than having no opinion" not in text


def test_sifts_growing_r_is_measured_against_the_task_loss():
    # R from 2e-4 to 0.03 nats while the task loss falls to 0.45: 6.7% of it, not negligible
    r = {"twitter": list(np.geomspace(2e-4, 0.03, 20)), "uci": [0.004] * 10}
    rel = {"twitter": [7.2e-3] * 20, "uci": [7.2e-3] * 10}
    task = {"twitter": [0.69] * 2 + [0.5] * 16 + [0.45] * 2, "uci": [0.9] * 5 + [0.6] * 5}
    lines = read_curves(_record("sift", _history(task, r=r, rel=rel), adv_weight=1.0))
    text = "\n".join(lines)
    r_start, r_end = np.mean(r["twitter"][:2]), np.mean(r["twitter"][-2:])
    assert (
        f"R, the regularizer's divergence (unweighted), goes from {r_start:.1e} to {r_end:.3f} nats "
        f"(×{r_end / r_start:.0f}); at the stage's end it is {100 * r_end / 0.45:.1f}% of the task loss: "
        f"not negligible."
    ) in text
    assert "0.7% of the task loss: small." in text  # stage 2: 0.004 against 0.6
    tiny = "\n".join(read_curves(_record("sift", _history(task, r={"twitter": [1e-5] * 20, "uci": [1e-5] * 10}))))
    assert "it is 0.0022% of the task loss: small." in tiny  # 1e-5 against 0.45, never a bare 0.0%
    assert "λ =" not in text  # weight 1: the share is the objective's
    assert "The push: the mean ‖Δ_t‖/‖z_t‖ over the logged points is 0.0072 of each token's norm." in text
    assert lines[-1].startswith("These are R's values beside the task loss, not its pull on the weights")


def test_a_weight_other_than_one_is_applied_and_a_stage_without_r_is_said():
    r = {"twitter": [0.02] * 10, "uci": [0.0] * 10}
    task = {"twitter": [0.5] * 10, "uci": [0.8] * 10}
    text = "\n".join(read_curves(_record("smart", _history(task, r=r), adv_weight=10.0)))
    assert "4.0% of the task loss, and weighted by λ = 10 it adds 40.0% to the objective: a sizeable part" in text
    assert "R is 0 in this stage: the regularizer does not run here (adv_stages)." in text


def test_smarts_bregman_term_and_a_logged_weighted_term():
    task = {"twitter": [0.5] * 10, "uci": [0.5] * 10}
    smart = _record(
        "smart",
        _history(
            task, r={"twitter": [1e-3] * 10, "uci": [1e-3] * 10}, bregman={"twitter": [0.01] * 10, "uci": [0.02] * 10}
        ),
        adv_weight=1.0,
        bregman_weight=1.0,
    )
    text = "\n".join(read_curves(smart))
    assert "SMART's Bregman term (unweighted) goes from 0.010 to 0.010 nats (×1); at the stage's end it is 2.0%" in text
    assert "0.2% of the task loss: small." in text
    # R-Drop logs its weighted term (reg_loss): the verdict is on that, not on the unweighted R
    rdrop = _record(
        "rdrop",
        _history(
            task, r={"twitter": [0.2] * 10, "uci": [0.2] * 10}, reg={"twitter": [0.002] * 10, "uci": [0.002] * 10}
        ),
        adv_weight=0.0,
    )
    text = "\n".join(read_curves(rdrop))
    assert "40.0% of the task loss, and the weighted term the loss adds (2.0e-03 nats) is 0.4% of it: small." in text


def test_methods_without_a_term_and_empty_histories():
    rel = {"twitter": [0.06] * 10, "uci": [0.08] * 10}
    text = "\n".join(read_curves(_record("freelb", _history({"twitter": [0.6] * 10, "uci": [0.5] * 10}, rel=rel))))
    assert text.count("FreeLB logs no separate regularizer term") == 2 and "pull on the weights" not in text
    assert "(from 0.06 to 0.08)" in text
    assert read_curves(_record("sift", [])) == ["The run logged no training history: there are no curves to read."]
    # the history alone (no config): read, unweighted, with no algorithm named
    assert read_curves(_history(TASK))[0].startswith("twitter (optimizer steps 10–200")


# ----------------------------------------------------------------------------- accuracies


def _p2(zero, zero_mcc, *, n=600, test=(0.74, 0.48), val=(0.855, 0.71)):
    metrics = {
        "twitter_val_accuracy": val[0],
        "twitter_val_mcc": val[1],
        "uci_zero_shot_accuracy": zero,
        "uci_zero_shot_mcc": zero_mcc,
        "uci_test_accuracy": test[0],
        "uci_test_mcc": test[1],
        "uci_zero_shot_smoothness_0.3": 1e-3,
    }
    stages = [
        {"name": "twitter", "train_examples": 800, "evals": {"twitter_val": 200, "uci_zero_shot": n}},
        {"name": "uci", "train_examples": 300, "evals": {"uci_test": n}},
    ]
    return {"config": {"task": "twitter_to_uci", "algo": "sift"}, "metrics": metrics, "stages": stages}


def test_below_chance_is_the_label_flip_with_the_swapped_accuracy():
    lines = read_zero_shot(_p2(0.433, -0.21))
    assert lines[0] == "Twitter validation (200 texts), in domain after stage 1: accuracy 0.855, MCC 0.710."
    zero = lines[1]
    yard = 2 * math.sqrt(0.25 / 600)
    assert zero.startswith("UCI zero-shot (600 texts), straight after stage 1: accuracy 0.433, MCC -0.210.")
    assert f"on 600 texts is {yard:.3f}" in zero and "below chance by 0.067, more than that yardstick" in zero
    assert "label flip" in zero and "swapped would score 0.567" in zero
    assert lines[2].startswith(
        "UCI test (600 texts), after stage 2 (300 UCI sentences): accuracy 0.740, MCC 0.480, +0.307 from zero-shot."
    )
    assert f"is {2 * math.sqrt(0.74 * 0.26 / 600):.3f}" in lines[2]


def test_above_and_within_chance_are_said_as_such():
    above = read_zero_shot(_p2(0.58, 0.17))[1]
    assert "above chance by 0.080, more than that yardstick" in above and "label flip" not in above
    within = read_zero_shot(_p2(0.49, -0.02))[1]
    assert "is within it (-0.010): not told apart from chance" in within and "label flip" not in within
    one_label = read_zero_shot(_p2(0.5, 0.0))[1]
    assert "MCC 0 exactly" in one_label
    # below chance by more than the yardstick, but not anti-correlated: the subset is not balanced
    odd = read_zero_shot(_p2(0.40, 0.05))[1]
    assert "but the MCC is not negative" in odd and "label flip" not in odd


def test_the_yardstick_needs_the_number_of_texts_and_other_tasks_get_one_sentence():
    record = _p2(0.433, -0.21)
    record["stages"] = []
    zero = read_zero_shot(record)[1]
    assert "no yardstick is drawn" in zero and "below chance" not in zero
    assert "texts: not recorded" in zero
    cola = {"config": {"task": "cola"}, "metrics": {"in_domain_dev_mcc": 0.2}}
    expected = "This run has no UCI zero-shot evaluation (task 'cola'): the zero-shot reading is P2's (twitter_to_uci)."
    assert read_zero_shot(cola) == [expected]
