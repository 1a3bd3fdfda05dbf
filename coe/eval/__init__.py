"""Evaluation: run a graph over a benchmark, write results, summary, report and plots."""
