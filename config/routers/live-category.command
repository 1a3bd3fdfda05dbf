# rebuilds live-category.json, live-category.npz (run from the repository root)
coe train --graph coe --profile config/profiles/live.json --data-path config/profiles/live-dev-slice.jsonl
