"""The command line: train, sweep, summarize, download, and the plan runner."""
