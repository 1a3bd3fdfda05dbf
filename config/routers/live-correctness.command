# rebuilds live-correctness.json, live-correctness.npz (run from the repository root)
coe train --graph bench-coe-query --profile config/profiles/live.json --data-path config/profiles/live-dev-slice.jsonl
