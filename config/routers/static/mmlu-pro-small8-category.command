# rebuilds mmlu-pro-small8-category.json, mmlu-pro-small8-category.npz (run from the repository root)
coe train --graph mmlu_pro/coe --profile config/profiles/mmlu-pro-small8.json --data-path ../shared/data/mmlu_pro/test.parquet --embedder static --out config/routers/static/mmlu-pro-small8-category.json
