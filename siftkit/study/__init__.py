"""A study of many runs: records grouped and checked, statistics, equal-budget verdicts, SUMMARY.md and its figures."""
