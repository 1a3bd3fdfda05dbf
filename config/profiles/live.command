# rebuilds live.json (run from the repository root), from a coe eval of the local experts on live-dev-slice.jsonl:
coe eval --graph vote --experts smollm2,smollm2-warm,gemma3-270m --dataset mmlu-pro --data-path config/profiles/live-dev-slice.jsonl --prompt cot0 --max-tokens 96 --concurrency 2 --out runs/live-profile
coe profile --results runs/live-profile --data-path config/profiles/live-dev-slice.jsonl --out config/profiles/live.json
