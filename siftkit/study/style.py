"""How every figure of the kit looks: the algorithms' colours and names, the metrics' labels,
the markers of marked points and the matplotlib settings, shared by the study's figures
(`siftkit.study.figures`) and the notebooks' (`siftkit.explore.plotting`) so that SMART is the
same red in both. Plain data: nothing here imports matplotlib."""

from __future__ import annotations

# plain, SMART and SiFT keep the colours of every earlier figure; the rest of the family take
# the remaining colours of matplotlib's tab10 cycle and its tab20 lighter shades.
ALGO_COLORS = {
    "plain": "#7f7f7f",
    "smart": "#d62728",
    "sift": "#9467bd",
    "freelb": "#1f77b4",
    "pgd": "#aec7e8",
    "freeat": "#17becf",
    "vat": "#2ca02c",
    "r3f": "#ff7f0e",
    "alum": "#8c564b",
    "rdrop": "#e377c2",
}
ALGO_LABELS = {
    "plain": "plain",
    "smart": "SMART",
    "sift": "SiFT",
    "freelb": "FreeLB",
    "pgd": "PGD-K",
    "freeat": "FreeAT",
    "vat": "VAT",
    "r3f": "R3F",
    "alum": "ALUM",
    "rdrop": "R-Drop",
}

# A metric as the y axis of a study figure (one line).
# UCI test: the 90% of the pool after the training share, less the validation share (uci_val_size).
METRIC_AXIS_LABELS = {
    "uci_test_accuracy": "UCI test accuracy",
    "out_of_domain_dev_mcc": "CoLA out-of-domain dev MCC",
    "reg_share": "λ·R / loss (regularizer's share of the objective)",
}
# A metric as the tick label of one run's bar (two lines); the bars follow this order.
METRIC_TICK_LABELS = {
    "in_domain_dev_mcc": "CoLA in-domain dev",
    "out_of_domain_dev_mcc": "CoLA out-of-domain dev\n(paper's CoLA column)",
    "twitter_val_accuracy": "Twitter validation\nafter stage 1",
    "uci_zero_shot_accuracy": "UCI 90%, zero-shot\nafter stage 1 only",
    "uci_test_accuracy": "UCI 90% after stage 2\n(paper's UCI column)",
}

# The marker of the untagged regularized point; a study spec names the markers of its own kinds
# (`siftkit.study.spec.point_markers`), and kinds named nowhere take the spare markers in name order.
DEFAULT_MARKERS = {"default": "*"}
SPARE_MARKERS = ("o", "<", ">", "p", "h", "8", "H", "1", "2", "3", "4")

_RC = {
    "savefig.dpi": 120,
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
# The summary's PNGs; their legends sit beside crowded axes, hence the smaller font.
SUMMARY_RC = {**_RC, "legend.fontsize": 8}
# The notebooks' figures, shown inline and saved with a tight bounding box.
NOTEBOOK_RC = {**_RC, "figure.dpi": 100, "savefig.bbox": "tight", "legend.fontsize": 9, "legend.frameon": False}
