# rebuilds live-skills.json, live-skills.npz (run from the repository root)
coe train --graph symbolic-moe --profile config/profiles/live.json --data-path config/profiles/live-dev-slice.jsonl --aggregation-test 7
