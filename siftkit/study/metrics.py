"""The metrics each protocol records and the one it reports (the test metric every comparison is
in). A shift spec's group enters its own when its runs are read (`siftkit.study.runs.register_spec_task`).

General: the kit's runs, selection and equal-budget code read these; the seed paper's own figures
are in `siftkit.study.paper`.
"""

# The reported (test) metric per protocol: the metric the paper's columns report for P1 and P2.
PAPER_METRIC = {"cola": "out_of_domain_dev_mcc", "twitter_to_uci": "uci_test_accuracy"}
# The metrics each protocol records, the reported one first.
TASK_METRICS = {
    "cola": ("out_of_domain_dev_mcc", "in_domain_dev_mcc"),
    "twitter_to_uci": ("uci_test_accuracy", "uci_zero_shot_accuracy", "twitter_val_accuracy"),
}
