"""siftkit.explore.analysis and siftkit.explore.plotting on tiny random models, and the tables of runs
(siftkit.study.tables): the numbers the notebooks show."""

import copy
import math
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import SHIFT_TINY, THREE, three_class_spec

from siftkit.core.split import PERTURB_POINTS, EmbeddingSplit
from siftkit.explore import analysis, plotting
from siftkit.run.config import RunConfig
from siftkit.run.models import load_model
from siftkit.study import tables
from siftkit.study.paper import PAPER_METRIC
from siftkit.study.stats import format_mean_std

TEXTS = {
    "a": ["a short one", "a somewhat longer sentence with more tokens in it", "#hashtag @user lol"],
    "b": ["the cat sat on the mat .", "colorless green ideas sleep furiously"],
}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, tokenizer = load_model("random:bert")
    model.train()  # the analysis must switch to eval itself, and switch back
    return model, tokenizer


@pytest.fixture(scope="module")
def stats(tiny):
    model, tokenizer = tiny
    return analysis.token_statistics(model, tokenizer, TEXTS, batch_size=2)


# ----------------------------------------------------------------------------- statistics


def test_token_statistics_counts_real_tokens_only(tiny, stats):
    _, tokenizer = tiny
    n_real = sum(len(tokenizer(t)["input_ids"]) for texts in TEXTS.values() for t in texts)
    assert len(stats) == n_real * len(PERTURB_POINTS)
    assert list(dict.fromkeys(stats["at"])) == list(analysis.BLOCK_ORDER)
    assert set(stats["domain"]) == {"a", "b"}
    assert list(stats.columns) == [
        "domain",
        "at",
        "text",
        "position",
        "token_id",
        "token",
        "special",
        "norm",
        "mean",
        "std",
    ]
    cls = stats[stats["position"] == 0]
    assert cls["special"].all() and (cls["token"] == "[CLS]").all()
    assert stats["special"].sum() == 2 * 5 * len(PERTURB_POINTS)  # [CLS] and [SEP] of 5 texts


def test_token_statistics_ignore_padding_and_match_the_tensor(tiny, stats):
    model, tokenizer = tiny
    # One text at a time (no padding) gives the same numbers as padded batches.
    alone = analysis.token_statistics(model, tokenizer, TEXTS, batch_size=1)
    pd.testing.assert_frame_equal(alone, stats, check_exact=False, rtol=1e-5, atol=1e-6)
    # ... and they are the norm, mean and population std of the vector at the point.
    split = EmbeddingSplit(model)
    model.eval()
    enc = tokenizer([TEXTS["b"][1]], return_tensors="pt")
    z = split.embed(dict(enc), "word_embeddings")[0]
    model.train()
    row = stats[(stats["domain"] == "b") & (stats["text"] == 1) & (stats["at"] == "word_embeddings")]
    np.testing.assert_allclose(row["norm"], z.norm(dim=-1).detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(row["mean"], z.mean(-1).detach().numpy(), rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(row["std"], z.std(-1, unbiased=False).detach().numpy(), rtol=1e-5)
    assert model.training, "the model's own mode must be restored"


def test_token_statistics_reject_unknown_point(tiny):
    with pytest.raises(ValueError, match="perturb_at must be one of"):
        analysis.token_statistics(*tiny, ["x"], at="embedings")


def test_domain_summary(stats):
    s = analysis.domain_summary(stats, include_special=False)
    assert len(s) == len(PERTURB_POINTS) * 2
    row = s[(s["at"] == "word_embeddings") & (s["domain"] == "b")].iloc[0]
    real = stats[(stats["at"] == "word_embeddings") & (stats["domain"] == "b") & ~stats["special"]]
    assert row["tokens"] == len(real) and row["texts"] == 2
    assert row["norm_mean"] == pytest.approx(real["norm"].mean())
    assert row["norm_cv"] == pytest.approx(real["norm"].std() / real["norm"].mean())
    assert row["norm_p05"] <= row["norm_median"] <= row["norm_p95"]


def test_norm_gap_tokens_decompose_the_gap_exactly(stats):
    full = analysis.norm_gap_tokens(stats, "a", "b", at="word_embeddings", top=10_000)
    real = stats[(stats["at"] == "word_embeddings") & ~stats["special"]]
    gap = real.loc[real["domain"] == "a", "norm"].mean() - real.loc[real["domain"] == "b", "norm"].mean()
    assert full.attrs["gap"] == pytest.approx(gap)
    assert full["contribution"].sum() == pytest.approx(gap, abs=1e-9)
    top = analysis.norm_gap_tokens(stats, "a", "b", at="word_embeddings", top=3)
    assert len(top) == 3
    assert list(top["contribution"].abs()) == sorted(full["contribution"].abs(), reverse=True)[:3]
    assert set(top.columns) >= {"token", "count_a", "count_b", "share_a", "share_b", "norm_a", "norm_b"}
    with pytest.raises(ValueError, match="pass at="):
        analysis.norm_gap_tokens(stats, "a", "b")
    with pytest.raises(ValueError, match="no tokens"):
        analysis.norm_gap_tokens(stats, "a", "zzz", at="word_embeddings")


def test_domain_texts_are_seeded_samples(data_dir):
    one = analysis.domain_texts(n=5, seed=3, data_dir=data_dir)
    assert list(one) == ["twitter", "uci", "cola"] and all(len(v) == 5 for v in one.values())
    assert one == analysis.domain_texts(n=5, seed=3, data_dir=data_dir)
    assert one != analysis.domain_texts(n=5, seed=4, data_dir=data_dir)
    with pytest.raises(ValueError, match="unknown domain"):
        analysis.domain_texts(["imdb"], n=2, data_dir=data_dir)


# ----------------------------------------------------------------------------- perturbations


def test_regularizers_for_keeps_each_algorithms_defaults():
    regs = analysis.regularizers_for(RunConfig(algo="smart", perturb_at="word_embeddings", adv_steps=2))
    assert (regs["smart"].adv_epsilon, regs["sift"].adv_epsilon) == (1e-5, 1e-2)
    assert regs["smart"].perturb_at == regs["sift"].perturb_at == "word_embeddings"
    assert regs["smart"].adv_steps == regs["sift"].adv_steps == 2
    assert not regs["smart"].normalized and regs["sift"].normalized
    # the config's own algorithm keeps its values; knobs apply to every algorithm alike
    own = analysis.regularizers_for(RunConfig(algo="sift", adv_epsilon=0.5))
    assert own["sift"].adv_epsilon == 0.5 and own["smart"].adv_epsilon == 1e-5
    same = analysis.regularizers_for(None, adv_epsilon=1e-3, adv_norm="l2")
    assert same["smart"].adv_epsilon == same["sift"].adv_epsilon == 1e-3
    with pytest.raises(ValueError, match="algo must be one of"):
        analysis.regularizers_for(None, ["plain"])


@pytest.mark.parametrize("at", PERTURB_POINTS)
def test_perturbation_sizes_respect_each_ball(tiny, at):
    model, tokenizer = tiny
    eps = {"smart": 1e-3, "sift": 1e-2}
    regs = {a: r for a, r in analysis.regularizers_for(None, perturb_at=at, adv_norm="l2").items()}
    for a, r in regs.items():
        r.adv_epsilon = eps[a]
        r.adv_step_size = 10 * eps[a]  # a step beyond the ball: the projection must bind
    rng_before = torch.get_rng_state()
    sizes = analysis.perturbation_sizes(model, tokenizer, TEXTS, regs, batch_size=2, seed=1)
    assert torch.equal(rng_before, torch.get_rng_state()), "the global RNG must be left alone"
    assert model.training and all(p.grad is None for p in model.parameters())
    smart, sift = sizes[sizes["algo"] == "smart"], sizes[sizes["algo"] == "sift"]
    assert len(smart) == len(sift) > 0 and set(sizes["at"]) == {at}
    # SMART: ||Delta_t|| <= eps (raw); SiFT: ||Delta_t|| <= eps * sigma_t — the defining property.
    assert (smart["perturbation_norm"] <= eps["smart"] * (1 + 1e-5)).all()
    assert (sift["perturbation_norm"] <= eps["sift"] * sift["std"] * (1 + 1e-5)).all()
    np.testing.assert_allclose(sift["normalized"], eps["sift"], rtol=1e-3)  # on the sphere after a big step
    np.testing.assert_allclose(sizes["relative"], sizes["perturbation_norm"] / sizes["norm"], rtol=1e-5)
    assert (sizes["divergence"] >= 0).all() and np.isfinite(sizes["divergence"]).all()
    # one divergence per text, repeated on its tokens
    assert sizes.groupby(["algo", "domain", "text"])["divergence"].nunique().eq(1).all()
    again = analysis.perturbation_sizes(model, tokenizer, TEXTS, regs, batch_size=2, seed=1)
    pd.testing.assert_frame_equal(sizes, again)
    # a step 10x the radius ends SiFT's tokens on the ball (SMART's tiny noise can leave a
    # text with an exactly-zero gradient, which stays inside: ball_fraction says so)
    assert analysis.ball_binding(sizes)["sift"] == 1.0
    np.testing.assert_allclose(sift["ball_fraction"], 1.0, rtol=1e-3)


def test_ball_binding_says_when_epsilon_stops_acting(tiny):
    # 00_tour's epsilon slider: once epsilon exceeds what noise + K steps reach, the ball no
    # longer binds and epsilon changes nothing.
    model, tokenizer = tiny
    regs = analysis.regularizers_for(None, adv_norm="inf")
    for reg in regs.values():
        reg.adv_noise_std, reg.adv_step_size = 1e-3, 1e-3
    for reg in regs.values():
        reg.adv_epsilon = 1.0  # far beyond noise + one step of 1e-3
    loose = analysis.perturbation_sizes(model, tokenizer, TEXTS, regs, batch_size=2)
    assert analysis.ball_binding(loose).to_dict() == {"smart": 0.0, "sift": 0.0}
    assert (loose["ball_fraction"] < 0.1).all()
    for reg in regs.values():
        reg.adv_epsilon = 1e-4  # well inside: every token is clipped to the surface
    tight = analysis.perturbation_sizes(model, tokenizer, TEXTS, regs, batch_size=2)
    assert analysis.ball_binding(tight).to_dict() == {"smart": 1.0, "sift": 1.0}
    mtdnn = analysis.regularizers_for(None, adv_rule="mtdnn")
    assert analysis.ball_binding(analysis.perturbation_sizes(model, tokenizer, TEXTS, mtdnn)).isna().all()


def test_perturbation_sizes_of_each_algorithm_do_not_depend_on_the_others(tiny):
    # The 00_tour panel switches SMART or SiFT off: the other's numbers must not move.
    model, tokenizer = tiny
    regs = analysis.regularizers_for(None)
    both = analysis.perturbation_sizes(model, tokenizer, TEXTS, regs, batch_size=2, seed=3)
    for algo in ("smart", "sift"):
        alone = analysis.perturbation_sizes(model, tokenizer, TEXTS, {algo: regs[algo]}, batch_size=2, seed=3)
        pd.testing.assert_frame_equal(both[both["algo"] == algo].reset_index(drop=True), alone)
    reverse = analysis.perturbation_sizes(
        model, tokenizer, TEXTS, {"sift": regs["sift"], "smart": regs["smart"]}, batch_size=2, seed=3
    )
    key = ["algo", "domain", "text", "position"]
    pd.testing.assert_frame_equal(
        both.sort_values(key).reset_index(drop=True), reverse.sort_values(key).reset_index(drop=True)
    )
    # one domain alone gives that domain's rows too
    only_b = analysis.perturbation_sizes(model, tokenizer, {"b": TEXTS["b"]}, regs, batch_size=2, seed=3)
    pd.testing.assert_frame_equal(both[both["domain"] == "b"].reset_index(drop=True), only_b)


def test_split_check_is_exact(tiny):
    check = analysis.split_check(*tiny, "split me exactly")
    assert list(check["at"]) == list(analysis.BLOCK_ORDER)
    assert (check["max_abs_logit_diff"] < 1e-5).all()
    assert check["shape"].iloc[0][:2] == (1, 5)


# ----------------------------------------------------------------------------- token-norm shift


def test_token_norm_shift(tiny):
    model, tokenizer = tiny
    same = analysis.token_norm_shift(model, model, tokenizer, TEXTS, at="word_embeddings")
    assert (same["shift"] == 0).all() and (same["norm_change"] == 0).all()
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.base_model.embeddings.word_embeddings.weight.mul_(2.0)
    moved = analysis.token_norm_shift(model, other, tokenizer, TEXTS)
    w = moved[moved["at"] == "word_embeddings"]
    np.testing.assert_allclose(w["relative_shift"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(w["norm_change"], 1.0, rtol=1e-5)
    np.testing.assert_allclose(w["tuned_norm"], 2 * w["base_norm"], rtol=1e-5)
    assert (moved.loc[moved["at"] == "embedding_output", "shift"] > 0).any()


@pytest.mark.slow
def test_load_run_models_rebuilds_base_and_reads_final_weights(tmp_path, data_dir):
    from siftkit.run.training import train

    cfg = RunConfig(
        task="twitter_to_uci",
        algo="sift",
        model_name="random:bert",
        data_dir=str(data_dir),
        output_dir=str(tmp_path / "run"),
        max_train_samples=4,
        max_eval_samples=4,
        per_device_train_batch_size=2,
        uci_num_train_epochs=1,
        learning_rate=1e-2,
        seed=7,
        save_model=True,
    )
    train(cfg, progress=False)
    loaded = analysis.load_run_models(tmp_path / "run" / "results.json")
    base, tuned = loaded["base"], loaded["tuned"]
    assert loaded["config"].seed == 7 and not base.training and not tuned.training
    wb = base.base_model.embeddings.word_embeddings.weight
    wt = tuned.base_model.embeddings.word_embeddings.weight
    same_rows = (wb == wt).all(dim=1)
    # Rows of tokens the run never saw are untouched (Adam without weight decay), so the
    # base was rebuilt exactly; rows of the tokens it trained on moved.
    assert same_rows.float().mean() > 0.95
    assert (~same_rows).sum() > 0
    shift = analysis.runs_token_norm_shift([tmp_path / "run"], {"d": ["hello world"]}, at="word_embeddings")
    assert set(shift["algo"]) == {"sift"} and set(shift["seed"]) == {7} and len(shift) == 4
    shutil.rmtree(tmp_path / "run" / "model")
    with pytest.raises(ValueError, match="save_model=True"):
        analysis.load_run_models(tmp_path / "run")


# ----------------------------------------------------------------------------- results tables


def _record(task, algo, seed, value, **cfg):
    metric = PAPER_METRIC[task]
    config = RunConfig(task=task, algo=algo, seed=seed, **cfg).to_dict()
    return {
        "config": config,
        "metrics": {metric: value, "other_metric": 0.1},
        "history": [],
        "meta": {"wall_time_s": 60.0 * seed, "device_name": "cpu", "git_commit": None},
    }


RECORDS = [
    _record("twitter_to_uci", "sift", 1, 0.70),
    _record("twitter_to_uci", "sift", 2, 0.80),
    _record("twitter_to_uci", "smart", 1, 0.60),
    _record("twitter_to_uci", "smart", 2, 0.65, bregman_weight=0.0),
    _record("cola", "plain", 1, 0.30),
    _record("cola", "plain", 2, 0.40, learning_rate=3e-5),
]


def test_results_frame_and_table():
    frame = tables.results_frame(RECORDS)
    assert len(frame) == 6 and frame["model"].eq("all-MiniLM-L6-v2").all()
    assert list(frame["variant"]) == ["", "", "", "bregman_weight=0.0", "", ""]
    table = tables.results_table(frame)
    sift = table[(table["algo"] == "sift") & (table["metric"] == "uci_test_accuracy")].iloc[0]
    assert sift["mean"] == pytest.approx(0.75) and sift["std"] == pytest.approx(np.std([0.7, 0.8], ddof=1))
    assert sift["n"] == 2 and sift["seeds"] == [1, 2] and sift["differs"] == ""
    assert sift["paper_bert"] == 0.80 and sift["paper_deberta"] == 0.91
    smart = table[(table["algo"] == "smart") & (table["metric"] == "uci_test_accuracy")]
    assert len(smart) == 2 and smart["n"].tolist() == [1, 1] and smart["std"].isna().all()
    cola = table[table["task"] == "cola"].iloc[0]
    assert cola["metric"] == "out_of_domain_dev_mcc" and cola["differs"] == "learning_rate"
    assert "other_metric" not in set(table["metric"])
    empty = tables.results_table(tables.results_frame([]))
    assert empty.empty and "mean" in empty.columns


def test_a_tagged_run_is_labelled_by_its_sweep_tag():
    tagged = _record(
        "twitter_to_uci",
        "smart",
        1,
        0.8,
        adv_epsilon=0.3,
        adv_noise_std=0.3,
        adv_step_size=30.0,
        bregman_weight=0.0,
        extra={"tag": "curve_eps0.3"},
    )
    frame = tables.results_frame([tagged, RECORDS[3]])
    assert list(frame["variant"]) == ["curve_eps0.3", "bregman_weight=0.0"]


def test_paper_table_layout_and_format():
    table = tables.results_table(tables.results_frame(RECORDS))
    paper = tables.paper_table(table)
    assert list(paper["algo"]) == ["plain", "smart", "smart", "sift"]  # the paper's row order
    assert list(paper["variant"]) == ["", "", "bregman_weight=0.0", ""]
    row = paper[(paper["algo"] == "sift")].iloc[0]
    assert row["uci_mean"] == pytest.approx(0.75) and math.isnan(row["cola_mean"])
    assert row["cola_paper_bert"] == 0.53 and row["uci_paper_deberta"] == 0.91
    text = tables.format_paper_table(paper)
    assert "0.750 ± 0.071 (n=2)" in set(text["UCI 10% acc (ours)"])
    assert "—" in set(text["CoLA MCC (ours)"])
    # without any run the paper's rows still show
    bare = tables.paper_table(tables.results_table(tables.results_frame([])))
    assert list(bare["algo"]) == ["plain", "smart", "sift"]
    assert list(bare["uci_paper_bert"]) == [0.55, 0.70, 0.80]
    assert format_mean_std(0.5, float("nan"), 1) == "0.500 (n=1)"


def test_model_label():
    assert tables.model_label(None) == "all-MiniLM-L6-v2"
    assert tables.model_label("random:bert") == "random:bert"
    assert tables.model_label("/models/deberta-v3-base/") == "deberta-v3-base"


# ----------------------------------------------------------------------------- plotting


def _png_size(path):
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _labelled(fig):
    """Every axes that shows data has both axis labels (units are in them); an x axis shared
    with the panel below may carry its label there."""
    for ax in fig.axes:
        if ax.has_data():
            siblings = ax.get_shared_x_axes().get_siblings(ax)
            assert any(a.get_xlabel() for a in siblings), f"unlabelled x axis in {ax.get_title()!r}"
            assert ax.get_ylabel(), f"unlabelled y axis in {ax.get_title()!r}"


@pytest.mark.slow
def test_statistics_figures(tiny, stats, tmp_path):
    model, tokenizer = tiny
    sizes = analysis.perturbation_sizes(model, tokenizer, TEXTS, analysis.regularizers_for(), batch_size=2)
    one = analysis.perturbation_sizes(model, tokenizer, ["just one sentence"], analysis.regularizers_for())
    shift = analysis.token_norm_shift(model, model, tokenizer, TEXTS).assign(algo="plain")
    shift["relative_shift"] += np.linspace(1e-3, 1e-2, len(shift))  # zero shifts cannot sit on a log axis
    figures = {
        "stats": plotting.embedding_statistics(stats),
        "gap": plotting.norm_gap_tokens_plot(analysis.norm_gap_tokens(stats, "a", "b", at="word_embeddings")),
        "sizes": plotting.perturbation_sizes_plot(sizes),
        "one": plotting.sentence_perturbation(one, mode="raw"),
        "norms": plotting.sentence_token_norms(analysis.token_statistics(model, tokenizer, ["just one"])),
        "shift": plotting.token_norm_shift_plot(shift),
        "change": plotting.token_norm_shift_plot(shift, value="norm_change"),
    }
    for name, fig in figures.items():
        _labelled(fig)
        width, height = _png_size(plotting.save_figure(fig, tmp_path / "figs" / f"{name}.png"))
        assert width > 400 and height > 250, name
    with pytest.raises(ValueError, match="mode must be one of"):
        plotting.sentence_perturbation(one, mode="logit")
    with pytest.raises(ValueError, match="PNG"):
        plotting.save_figure(figures["one"], tmp_path / "x.pdf")


@pytest.mark.slow
def test_run_figures(tmp_path):
    history = [
        {
            "stage": s,
            "global_step": i,
            "task_loss": 0.7 - 0.01 * i,
            "loss": 0.7 - 0.01 * i + 1e-5,
            "adv_loss": 1e-5,
            "bregman_loss": 0.0,
            "relative_perturbation": 7e-3,
            "learning_rate": 2e-5,
        }
        for i, s in enumerate(["twitter"] * 5 + ["uci"] * 3, start=1)
    ]
    record = {
        "config": RunConfig(algo="sift").to_dict(),
        "history": history,
        "meta": {"device_name": "cpu"},
        "metrics": {"twitter_val_accuracy": 0.9, "uci_zero_shot_accuracy": 0.4, "uci_test_accuracy": 0.7},
    }
    frame = tables.results_frame(RECORDS)
    table = tables.results_table(frame)
    figures = {
        "curves": plotting.learning_curves(record),
        "bars": plotting.metric_bars(record),
        "compare": plotting.compare_bars(table, frame),
        "cost": plotting.cost_bars(frame),
        "empty": plotting.compare_bars(tables.results_table(tables.results_frame([]))),
    }
    for name, fig in figures.items():
        _labelled(fig)
        width, height = _png_size(plotting.save_figure(fig, tmp_path / f"{name}.png"))
        assert width > 400 and height > 250, name
    titles = [ax.get_title() for ax in figures["curves"].axes]
    assert "training loss" in titles and "learning-rate schedule" in titles


def test_findings_are_generated_from_the_numbers():
    summary = pd.DataFrame(
        {
            "at": ["word_embeddings", "embedding_output"] * 2,
            "domain": ["uci"] * 2 + ["cola"] * 2,
            "norm_cv": [0.10, 0.30, 0.25, 0.05],
        }
    )
    assert analysis.norm_cv_findings(summary) == [
        "uci: token norms vary most at embedding_output (norm_cv 0.3) and least at word_embeddings (norm_cv 0.1)",
        "cola: token norms vary most at word_embeddings (norm_cv 0.25) and least at embedding_output (norm_cv 0.05)",
    ]
    rows = []
    for at, smart_spread in (("word_embeddings", 2.0), ("embedding_output", 8.0)):
        for domain in ("uci", "cola"):
            for i in range(21):  # SiFT: 1.0 .. 1.2; SMART: spread by smart_spread
                rows.append({"at": at, "domain": domain, "algo": "sift", "special": False, "relative": 1 + 0.01 * i})
                rows.append(
                    {
                        "at": at,
                        "domain": domain,
                        "algo": "smart",
                        "special": False,
                        "relative": smart_spread ** (i / 20),
                    }
                )
    spread = analysis.relative_spread(pd.DataFrame(rows))
    assert spread.loc[("embedding_output", "smart", "uci"), "p95 / p05"] == pytest.approx(8**0.9, rel=1e-6)
    lines = analysis.spread_findings(spread)
    assert lines[-1] == "SMART and SiFT differ most at embedding_output and least at word_embeddings"
    assert lines[0].startswith("word_embeddings: SMART's p95/p05 spread is ")


def _one_sentence_frame(relative):
    n = len(relative)
    rows = {
        "algo": ["sift"] * n,
        "at": ["embedding_output"] * n,
        "token": [f"t{i}" for i in range(n)],
        "text": [0] * n,
        "position": list(range(n)),
        "special": [False] * n,
        "norm": [10.0] * n,
        "std": [0.5] * n,
        "perturbation_norm": [10.0 * r for r in relative],
        "relative": relative,
        "normalized": [20.0 * r for r in relative],
        "divergence": [1e-8] * n,
    }
    return pd.DataFrame(rows)


def test_axes_show_relative_variation_honestly():
    # A ±3% wobble on a linear axis that starts at 0 stays a wobble (auto-scaling zooms it
    # to the full height).
    wobble = [0.0100, 0.0103, 0.0097, 0.0101, 0.0099]
    ax = plotting.sentence_perturbation(_one_sentence_frame(wobble), mode="relative").axes[0]
    low, high = ax.get_ylim()
    assert ax.get_yscale() == "linear" and low == 0 and high < 0.012
    # A log axis over a few decades labels every tick in one format (never 0.0001 beside 5e-05).
    spread = [2e-5, 5e-5, 1e-4, 3e-4, 2e-3]
    fig = plotting.sentence_perturbation(_one_sentence_frame(spread), mode="relative")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    labels = [ax.yaxis.get_major_formatter()(v, 0) for v in ax.get_yticks() if 1e-5 <= v <= 1e-2]
    assert labels and all("e-" in label for label in labels), labels


def test_a_log_axis_has_labelled_ticks_around_the_data():
    # 00's first perturbation figure: SMART near 2e-5, SiFT near 7e-3. The axis must carry a
    # labelled tick at or below the smallest value and at or above the largest (auto-limits
    # labelled only 1e-4 and 1e-3, with the data outside both).
    values = [2.1e-5, 2.3e-5, 2.0e-5, 6.8e-3, 7.2e-3, 7.0e-3]
    ax = plotting.sentence_perturbation(_one_sentence_frame(values), mode="relative").axes[0]
    low, high = ax.get_ylim()
    ticks = [t for t in ax.get_yticks() if low * (1 - 1e-9) <= t <= high * (1 + 1e-9)]
    assert min(ticks) <= min(values) and max(ticks) >= max(values), (ticks, (low, high))
    assert 1e-5 / 1.2 < low < 1e-5 and 1e-2 < high < 1e-2 * 1.2  # whole decades, a small margin
    # each algorithm's median is drawn on the axis and named in the legend
    assert any("median" in t.get_text() for t in ax.get_legend().get_texts())


@pytest.mark.slow
def test_grid_figures_fit_a_notebook_and_keep_legends_off_the_data(tiny, stats):
    # JupyterLab shrinks a wider figure to its column: at most 10 inches (1000 px at 100 dpi).
    model, tokenizer = tiny
    sizes = analysis.perturbation_sizes(model, tokenizer, TEXTS, analysis.regularizers_for(), batch_size=2)
    shift = analysis.token_norm_shift(model, model, tokenizer, TEXTS).assign(algo="plain")
    gap = analysis.norm_gap_tokens(stats, "a", "b", at="word_embeddings")
    for fig in (
        plotting.embedding_statistics(stats),
        plotting.perturbation_sizes_plot(sizes),
        plotting.token_norm_shift_plot(shift),
        plotting.norm_gap_tokens_plot(gap),
    ):
        assert fig.get_figwidth() <= 10.0
        assert all(ax.get_legend() is None for ax in fig.axes), "legends go below the panels"
        assert fig.legends, "one figure legend"


def test_ticks_of_a_single_valued_axis_stay_readable():
    # A random smoke model gives every token the same norm after LayerNorm.
    stats = pd.DataFrame(
        {
            "domain": ["a"] * 40,
            "at": ["embedding_output"] * 40,
            "special": [False] * 40,
            "norm": 5.656854 + np.linspace(0, 1e-6, 40),
            "std": [1.0] * 40,
            "mean": [0.0] * 40,
        }
    )
    ax = plotting.embedding_statistics(stats, values=("norm",)).axes[0]
    low, high = ax.get_xlim()
    assert high - low == pytest.approx(0.1 * 5.656854, rel=1e-3)  # ±5%, not ±1e-6


# ----------------------------------------------------------------------------- shift specs


def test_load_run_models_of_a_three_class_shift_run(tmp_path):
    from siftkit.run.training import train

    cfg = RunConfig(
        task="shift",
        shift=three_class_spec(tmp_path / "data"),
        algo="sift",
        seed=3,
        save_model=True,
        output_dir=str(tmp_path / "run"),
        **SHIFT_TINY,
    )
    train(cfg, progress=False)
    loaded = analysis.load_run_models(tmp_path / "run")
    base, tuned, tokenizer = loaded["base"], loaded["tuned"], loaded["tokenizer"]
    assert base.config.num_labels == tuned.config.num_labels == 3
    assert base.classifier.out_features == tuned.classifier.out_features == 3
    batch = tokenizer(["lovely product"], return_tensors="pt")
    with torch.no_grad():
        assert tuned(**batch).logits.shape == (1, 3)
    # the tuned head is the run's (it moved), the base head the seeded initialisation
    assert not torch.equal(base.classifier.weight, tuned.classifier.weight)
    shift = analysis.runs_token_norm_shift([tmp_path / "run"], {"d": ["lovely product"]}, at="word_embeddings")
    assert set(shift["algo"]) == {"sift"} and (shift["shift"] > 0).any()


def test_spec_domain_texts_read_each_domain_as_the_run_does(tmp_path):
    import json

    spec = three_class_spec(tmp_path)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "premise,hypothesis,gold\n" + "".join(f'"premise {i}","hypothesis {i}",{THREE[i % 3]}\n' for i in range(9))
    )
    spec["stages"].append(
        {"name": "forum", "data": {"files": str(pairs), "text": ["premise", "hypothesis"], "label": "gold"}}
    )
    # an evaluation set with a filter, and rows dropped as unmapped
    extra = tmp_path / "extra.jsonl"
    extra.write_text(
        "".join(
            json.dumps({"t": f"sentence {i}", "y": "x" if i % 4 == 0 else "p", "src": "a" if i < 10 else "b"}) + "\n"
            for i in range(20)
        )
    )
    spec["evals"].append(
        {
            "name": "extra",
            "data": {
                "files": str(extra),
                "text": "t",
                "label": "y",
                "where": {"src": "a"},
                "unmapped": "drop",
                "label_map": {"p": "positive"},
            },
        }
    )
    texts = analysis.spec_domain_texts(spec, n=100, seed=1)
    # a stage and an evaluation set both named "forum" are told apart
    assert list(texts) == ["reviews", "forum_stage", "forum_eval", "extra"]
    assert len(texts["reviews"]) == 24  # all rows: the validation share is part of the stage's domain
    assert sorted(texts["forum_stage"]) == sorted(f"premise {i} hypothesis {i}" for i in range(9))  # pairs, one space
    assert sorted(texts["extra"]) == sorted(f"sentence {i}" for i in range(10) if i % 4)  # where, then unmapped dropped
    assert all(t.startswith("i ") for t in texts["forum_eval"])
    few = analysis.spec_domain_texts(spec, n=3, seed=1)
    assert all(len(v) == 3 for v in few.values()) and few == analysis.spec_domain_texts(spec, n=3, seed=1)
    assert few != analysis.spec_domain_texts(spec, n=3, seed=2)
    assert set(few["reviews"]) <= set(texts["reviews"])
    # a path, a params file with a shift: block and a RunConfig give the same texts
    import yaml

    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"task": "shift", "num_train_epochs": 2, "shift": spec}))
    cfg = RunConfig(task="shift", shift=spec)
    for source in (tmp_path / "spec.yaml", str(tmp_path / "params.yaml"), cfg):
        assert analysis.spec_domain_texts(source, n=3, seed=1) == few
    assert analysis.spec_domain_pairs(spec) == [
        ("forum_eval", "reviews"),
        ("forum_eval", "forum_stage"),
        ("extra", "reviews"),
        ("extra", "forum_stage"),
        ("forum_stage", "reviews"),
    ]
    with pytest.raises(ValueError, match="task='shift'"):
        analysis.spec_domain_texts(RunConfig(task="cola"))
    with pytest.raises(ValueError, match="n must be >= 1"):
        analysis.spec_domain_texts(spec, n=0)


def test_spec_tables_count_rows_and_labels(tmp_path):
    from siftkit.run.protocols import build_stages

    cfg = RunConfig(task="shift", shift=three_class_spec(tmp_path), num_train_epochs=2, **SHIFT_TINY)
    stages = analysis.spec_stages_table(cfg)
    assert stages.to_dict("records") == [
        {
            "stage": "reviews",
            "num_train_epochs": 2,
            "learning_rate": 1e-2,
            "validation": "0.25 of its rows (seeded)",
            "val_metric": "accuracy",
            "evaluated after it": "forum",
        }
    ]
    sets = analysis.spec_sets_table(cfg).set_index("set")
    assert list(sets.index) == ["reviews", "reviews_val", "forum"]
    assert list(sets["role"]) == ["train", "validation", "evaluation"]
    assert list(sets["rows"]) == [18, 6, 12] and (sets["used"] == sets["rows"]).all()
    assert sets.loc["forum", ["negative", "neutral", "positive"]].tolist() == [4, 4, 4]
    # stars 1, 3, 5, 2, 3, 4 repeated: 8 negative, 8 neutral, 8 positive over train + validation
    assert (sets.loc["reviews", THREE] + sets.loc["reviews_val", THREE]).tolist() == [8, 8, 8]
    assert sets.loc["forum", "majority"] == pytest.approx(1 / 3)
    # capped: the same subsets the run draws
    capped_cfg = cfg.replace(max_train_samples=5, max_eval_samples=4)
    capped = analysis.spec_sets_table(capped_cfg).set_index("set")
    assert list(capped["used"]) == [5, 4, 4] and list(capped["rows"]) == [18, 6, 12]
    built = build_stages(capped_cfg)[0]
    for name, ds in (("reviews", built.train), ("forum", built.evals["forum"])):
        counts = [list(ds["label"]).count(i) for i in range(3)]
        assert capped.loc[name, THREE].tolist() == counts
        assert capped.loc[name, "majority"] == pytest.approx(max(counts) / len(ds))


def test_algo_configs_give_each_algorithm_its_own_defaults(tmp_path):
    cfg = RunConfig(
        task="shift",
        shift=three_class_spec(tmp_path),
        algo="sift",
        perturb_at="word_embeddings",
        adv_steps=2,
        adv_epsilon=0.5,
        seed=4,
        output_dir=str(tmp_path / "out"),
        **SHIFT_TINY,
    )
    configs = analysis.algo_configs(cfg)
    assert list(configs) == ["plain", "smart", "sift"]
    for algo, c in configs.items():
        assert c.algo == algo and c.output_dir == str(tmp_path / "out" / f"{algo}-seed4") and c.seed == 4
        assert c.shift == cfg.shift and c.learning_rate == cfg.learning_rate
    plain, smart, sift = configs.values()
    assert (plain.perturb_at, plain.adv_steps, plain.adv_epsilon) == ("embedding_output", 1, 0.0)
    assert (smart.perturb_at, smart.adv_steps, smart.adv_epsilon, smart.bregman_weight) == (
        "word_embeddings",
        2,
        1e-5,
        1.0,
    )
    # cfg's own epsilon is not carried over, not even to its own algorithm
    assert (sift.perturb_at, sift.adv_steps, sift.adv_epsilon, sift.bregman_weight) == (
        "word_embeddings",
        2,
        1e-2,
        None,
    )
    assert list(analysis.algo_configs(cfg, ["sift"])) == ["sift"]
    with pytest.raises(ValueError, match="algorithms must be among 'plain', 'smart', 'sift'; got 'smrt'"):
        analysis.algo_configs(cfg, ["smrt"])
    with pytest.raises(ValueError, match="given twice"):
        analysis.algo_configs(cfg, ["sift", "sift"])


def _shift_record(spec, algo, seed, metrics, texts=(6, 12)):
    from siftkit.data.shift_spec import parse_spec

    return {
        "config": RunConfig(task="shift", shift=spec, algo=algo, seed=seed).to_dict(),
        "metrics": metrics,
        "meta": {"shift": {"sha256": parse_spec(spec).digest}},
        "stages": [{"name": "reviews", "evals": {"reviews_val": texts[0], "forum": texts[1]}}],
    }


def test_shift_target_table_and_findings(tmp_path):
    spec = three_class_spec(tmp_path)

    def metrics(val, acc):
        return {
            "reviews_val_accuracy": val,
            "reviews_val_mcc": 0.1,
            "reviews_val_macro_f1": 0.2,
            "forum_accuracy": acc,
            "forum_mcc": acc - 0.5,
            "forum_macro_f1": acc - 0.1,
        }

    records = [
        _shift_record(spec, "sift", 1, metrics(0.95, 0.85)),
        _shift_record(spec, "plain", 1, metrics(0.8, 0.40)),
        _shift_record(spec, "sift", 2, metrics(0.95, 0.95)),
    ]
    table = analysis.shift_target_table(records)
    assert list(zip(table["algo"], table["target"])) == [("plain", "forum"), ("sift", "forum")]  # plain first
    sift = table.set_index("algo").loc["sift"]
    assert sift["accuracy"] == pytest.approx(0.9) and sift["accuracy_std"] == pytest.approx(math.sqrt(0.005))
    assert sift["n"] == 2 and sift["seeds"] == [1, 2] and sift["texts"] == 12 and sift["mcc"] == pytest.approx(0.4)
    assert math.isnan(table.set_index("algo").loc["plain", "accuracy_std"])
    sets = pd.DataFrame(
        {
            "set": ["reviews", "reviews_val", "forum"],
            "role": ["train", "validation", "evaluation"],
            "majority": [0.5, 0.5, 0.5],
        }
    )
    full = analysis.shift_target_table(records, sets=sets, validation=True)
    assert list(zip(full["algo"], full["target"], full["role"])) == [
        ("plain", "reviews_val", "validation"),
        ("plain", "forum", "evaluation"),
        ("sift", "reviews_val", "validation"),
        ("sift", "forum", "evaluation"),
    ]
    assert set(full.loc[full["role"] == "evaluation", "reference"]) == {"reviews_val"}
    assert (full["majority"] == 0.5).all()
    # 12 texts near 0.65: twice the binomial s.e. is 0.275; SiFT − plain = +0.5 is beyond it
    (text,) = analysis.shift_target_findings(full)
    assert text.startswith("forum (12 texts; mean ± std over up to 2 seeds): accuracy plain 0.400, SiFT 0.900 ± 0.071.")
    assert "From in domain (reviews_val) to forum, accuracy changes by: plain -0.400, SiFT -0.050." in text
    assert "near 0.65 on 12 texts is 0.275." in text and "SiFT − plain = +0.500, beyond it on these texts." in text
    assert "scores 0.500: SiFT above it by more than the yardstick; plain not shown to beat it." in text
    # the same gap on 12 texts but smaller: within the yardstick; one run each says so
    close = [_shift_record(spec, "plain", 1, metrics(0.8, 0.60)), _shift_record(spec, "smart", 1, metrics(0.8, 0.70))]
    (text,) = analysis.shift_target_findings(analysis.shift_target_table(close))
    assert "(12 texts; one run per algorithm)" in text
    assert "SMART − plain = +0.100, within it: not told apart from evaluation noise on this set." in text
    assert "majority" not in text
    other = copy.deepcopy(spec)
    other["name"] = "another"
    with pytest.raises(ValueError, match="one shift spec"):
        analysis.shift_target_table(records + [_shift_record(other, "plain", 1, metrics(0.8, 0.4))])
    with pytest.raises(ValueError, match="no runs"):
        analysis.shift_target_table([])


def test_run_domains_say_what_each_run_trained_on(tmp_path):
    import json

    for name, stages in (("p2", ["twitter", "uci"]), ("spec", ["reviews"])):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(
            json.dumps(
                {
                    "config": {"algo": "sift", "seed": 1},
                    "metrics": {},
                    "history": [],
                    "meta": {},
                    "stages": [{"name": s} for s in stages],
                }
            )
        )
    table = analysis.run_domains([tmp_path / "p2" / "results.json", tmp_path / "spec"], ["twitter", "uci", "cola"])
    assert table["trained on"].tolist() == ["twitter, uci", "none of these"]
    assert table["never trained on"].tolist() == ["cola", "twitter, uci, cola"]


def test_domain_palette_keeps_the_kit_colours_and_tells_spec_domains_apart():
    assert plotting.domain_palette(["twitter", "uci", "cola"]) == {
        k: plotting.DOMAIN_COLORS[k] for k in ("twitter", "uci", "cola")
    }
    palette = plotting.domain_palette(["amazon", "imdb", "yelp", "uci"])
    assert len(set(palette.values())) == 4 and palette["uci"] == plotting.DOMAIN_COLORS["uci"]


def test_per_target_bars_draw_every_algorithm_target_and_floor():
    rows = []
    for algo in ("plain", "smart", "sift"):
        for target, role, acc in (
            ("amazon_val", "validation", 0.9),
            ("imdb", "evaluation", 0.8),
            ("yelp", "evaluation", 0.7),
        ):
            rows.append(
                {
                    "algo": algo,
                    "algorithm": algo,
                    "target": target,
                    "role": role,
                    "accuracy": acc,
                    "mcc": acc - 0.5,
                    "macro_f1": acc - 0.1,
                    "majority": 0.55,
                }
            )
    fig = plotting.per_target_bars(pd.DataFrame(rows), title="spec x")
    accuracy = fig.axes[0]
    assert accuracy.get_title() == "accuracy" and len(accuracy.patches) == 9  # 3 algorithms x 3 sets
    assert [t.get_text() for t in accuracy.get_xticklabels()] == ["amazon_val\n(validation)", "imdb", "yelp"]
    assert len(accuracy.collections) == 3  # one majority dash per set
    assert fig._suptitle.get_text() == "spec x" and fig.get_figwidth() <= 10
