"""Evaluation core: datasets, prompts, answer extraction and an offline token counter."""
