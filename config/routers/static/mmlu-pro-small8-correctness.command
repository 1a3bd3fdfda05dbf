# rebuilds mmlu-pro-small8-correctness.json, mmlu-pro-small8-correctness.npz (run from the repository root)
coe train --graph mmlu_pro/bench-coe-query --profile config/profiles/mmlu-pro-small8.json --data-path ../shared/data/mmlu_pro/test.parquet --embedder static --out config/routers/static/mmlu-pro-small8-correctness.json
