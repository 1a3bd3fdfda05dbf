# rebuilds mmlu-pro-small8.json (run from the repository root)
coe profile --replay-dir ../shared/data/mmlu_pro/outputs --data-path ../shared/data/mmlu_pro/test.parquet --experts Meta-Llama-3_1-8B-Instruct,mathstral-7B,Phi-3-mini-4k-instruct,Meta-Llama-3-8B,gemma-7b,Qwen1.5-7B-Chat,Mistral-7B-Instruct-v0.2,Yi-6b-Chat --out config/profiles/mmlu-pro-small8.json
