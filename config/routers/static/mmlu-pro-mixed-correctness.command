# rebuilds mmlu-pro-mixed-correctness.json, mmlu-pro-mixed-correctness.npz (run from the repository root)
coe train --graph mmlu_pro/cost-aware --profile config/profiles/mmlu-pro-mixed.json --data-path ../shared/data/mmlu_pro/test.parquet --embedder static --out config/routers/static/mmlu-pro-mixed-correctness.json
