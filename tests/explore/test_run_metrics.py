"""A run's metrics as the notebooks show them (siftkit.explore.run_metrics)."""

import math

from siftkit.explore.run_metrics import metrics_style, metrics_table, run_level

P2 = {
    "metrics": {
        "twitter_val_accuracy": 0.885,
        "twitter_val_mcc": 0.7711,
        "twitter_val_smoothness_0.01": 2.64e-07,
        "twitter_val_smoothness_0.3": 2.46e-04,
        "uci_zero_shot_accuracy": 0.484,
        "uci_zero_shot_mcc": -0.0554,
        "uci_zero_shot_accuracy_amazon": 0.49,
        "uci_zero_shot_mcc_amazon": -0.0486,
        "uci_zero_shot_smoothness_0.3": 9.06e-05,
        "uci_test_accuracy": 0.887,
        "uci_test_mcc": 0.777,
        "uci_test_accuracy_imdb": 0.8817,
        "uci_test_mcc_imdb": 0.7677,
        "mean_relative_perturbation": 0.297,
        "mean_ascent_cosine": 0.798,
    }
}


def test_one_row_per_set_sources_under_their_set_probes_in_their_own_columns():
    table = metrics_table(P2)
    assert list(table.index) == [
        "twitter_val",
        "uci_zero_shot",
        "uci_zero_shot · amazon",
        "uci_test",
        "uci_test · imdb",
    ]
    assert list(table.columns) == ["accuracy", "MCC", "sym-KL probe 0.01", "sym-KL probe 0.3"]
    assert table.loc["uci_test · imdb", "accuracy"] == 0.8817
    assert table.loc["twitter_val", "sym-KL probe 0.3"] == 2.46e-04
    assert math.isnan(table.loc["uci_test", "sym-KL probe 0.3"])
    # the run's own measurements are not an evaluation set
    assert "mean_relative_perturbation" not in " ".join(table.index)
    assert run_level(P2).to_dict() == {
        "mean ‖Δ_t‖/‖z_t‖ (training)": 0.297,
        "mean cosine of δ with the ascent gradient": 0.798,
    }


def test_scores_to_three_decimals_and_only_probes_in_scientific_notation():
    html = metrics_style(metrics_table(P2)).to_html()
    assert ">0.885<" in html and ">-0.055<" in html and ">2.5e-04<" in html and ">2.6e-07<" in html
    assert "e-01" not in html  # no accuracy in scientific notation


def test_a_cola_and_a_shift_run():
    cola = metrics_table(
        {
            "metrics": {
                "in_domain_dev_accuracy": 0.69,
                "in_domain_dev_mcc": 0.0448,
                "out_of_domain_dev_accuracy": 0.6899,
                "out_of_domain_dev_mcc": 0.0841,
            }
        }
    )
    assert list(cola.index) == ["in_domain_dev", "out_of_domain_dev"] and list(cola.columns) == ["accuracy", "MCC"]
    shift = metrics_table(
        {
            "metrics": {
                "amazon_val_accuracy": 0.9,
                "amazon_val_mcc": 0.8,
                "amazon_val_macro_f1": 0.9,
                "imdb_accuracy": 0.88,
                "imdb_mcc": 0.76,
                "imdb_macro_f1": 0.88,
            }
        }
    )
    assert list(shift.columns) == ["accuracy", "MCC", "macro-F1"] and list(shift.index) == ["amazon_val", "imdb"]
    assert run_level(shift.to_dict()).empty


def test_show_metrics_leaves_out_a_plain_runs_zero_perturbation(monkeypatch):
    import IPython.display

    from siftkit.explore.run_metrics import show_metrics

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda obj: shown.append(obj))
    plain = {
        "metrics": {
            "uci_test_accuracy": 0.7,
            "uci_test_mcc": 0.4,
            "mean_relative_perturbation": 0.0,
            "mean_perturbation_norm": 0.0,
        }
    }
    show_metrics(plain)
    assert shown == []
    show_metrics(P2)
    assert len(shown) == 1
