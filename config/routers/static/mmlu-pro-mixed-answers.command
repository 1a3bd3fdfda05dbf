# rebuilds mmlu-pro-mixed-answers.json, mmlu-pro-mixed-answers.npz (run from the repository root)
coe train --graph mmlu_pro/mixed-frugal --profile config/profiles/mmlu-pro-mixed.json --data-path ../shared/data/mmlu_pro/test.parquet --embedder static --out config/routers/static/mmlu-pro-mixed-answers.json
