# rebuilds mot.json, mot.safetensors (run from the repository root)
coe train mot --data-path /work/shared/data/mmlu_pro/test.parquet
