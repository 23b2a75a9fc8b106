"""The seed paper's reported figures and the metric each of its columns means.

Tables 1 (BERT-base) and 2 (DeBERTa-base), single seed-42 runs: CoLA = MCC on
out_of_domain_dev; "UCI 10%" = accuracy on the held-out 90% of UCI after Twitter + 10% UCI.
The metric each column reports, and the other metrics each protocol records, are the kit's
registry (`siftkit.study.metrics`), named here too.
"""

from siftkit.study.metrics import PAPER_METRIC, TASK_METRICS

__all__ = ["PAPER_RESULTS", "PAPER_METRIC", "TASK_METRICS"]

PAPER_RESULTS: dict[str, dict[str, dict[str, float]]] = {
    "bert": {
        "cola": {"plain": 0.52, "smart": 0.51, "sift": 0.53},
        "twitter_to_uci": {"plain": 0.55, "smart": 0.70, "sift": 0.80},
    },
    "deberta": {
        "cola": {"plain": 0.54, "smart": 0.56, "sift": 0.56},
        "twitter_to_uci": {"plain": 0.56, "smart": 0.80, "sift": 0.91},
    },
}
