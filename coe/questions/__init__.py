"""Benchmark knowledge every layer may use: the multiple-choice question model and its loaders
(MMLU-Pro, GPQA, CSV), the official prompts, answer extraction and an offline token counter.

Evaluation, replay experts, routers and aggregators import from here; this package imports none
of them.
"""
