# rebuilds mmlu-pro-small8-answers.json, mmlu-pro-small8-answers.npz (run from the repository root)
coe train --graph mmlu_pro/frugal --profile config/profiles/mmlu-pro-small8.json --data-path ../shared/data/mmlu_pro/test.parquet --embedder static --out config/routers/static/mmlu-pro-small8-answers.json
