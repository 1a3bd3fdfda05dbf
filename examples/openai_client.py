"""Ask coe through the official openai client: a vote, then a streamed answer, each with its trace.

    COE_URL=http://127.0.0.1:8000/v1 python examples/openai_client.py
"""

import os

from openai import OpenAI

client = OpenAI(
    base_url=os.environ.get("COE_URL", "http://127.0.0.1:8000/v1"),
    api_key=os.environ.get("COE_API_KEY", "none"),  # checked only when the server sets COE_API_KEYS
)

# The model is a graph: `vote` asks every expert and returns the answer most of them agree on.
response = client.chat.completions.create(
    model="vote",
    messages=[{"role": "user", "content": "What is 12 + 30?"}],
    max_tokens=32,
)
print(response.choices[0].message.content)
trace = response.model_extra["coe"]  # what coe did: each expert call, the vote, usage and cost
for call in trace["calls"]:
    print(f"  {call['expert']}: {call.get('answer', call.get('error'))!r}")
print(f"  usage: {response.usage.total_tokens} tokens, ${trace['usage']['cost']:.8f}")

# Streaming: content arrives in chunks; the last chunk has no choices and carries the trace.
stream = client.chat.completions.create(
    model="single",
    messages=[{"role": "user", "content": "Name three colours."}],
    max_tokens=32,
    stream=True,
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
    else:
        print(f"\n  answered by {[c['expert'] for c in chunk.model_extra['coe']['calls']]}")
