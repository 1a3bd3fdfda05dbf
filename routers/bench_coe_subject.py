"""``bench-coe-subject``: Bench-CoE at subject level.

A subject classifier on the query (the same softmax over all-MiniLM-L6-v2 embeddings as ``coe``,
trained on dev questions with MMLU-Pro categories as subjects) and, for each subject, the expert
with the best dev accuracy on it. No fallback, no budget: one call per query.

Artifact kind ``category`` (shared with ``coe``).
"""

from __future__ import annotations

from routers.coe import CategoryRouter


class BenchCoESubjectRouter(CategoryRouter):
    name = "bench-coe-subject"
