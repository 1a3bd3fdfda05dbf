#!/bin/sh
# Ask coe with curl: a plain answer, then a streamed one (Server-Sent Events).
#   COE_URL=http://127.0.0.1:8000/v1 sh examples/curl.sh
set -eu
URL="${COE_URL:-http://127.0.0.1:8000/v1}"
AUTH="Authorization: Bearer ${COE_API_KEY:-none}"  # checked only when the server sets COE_API_KEYS

curl -sS --fail-with-body "$URL/chat/completions" -H "$AUTH" -H "Content-Type: application/json" -d '{
  "model": "single",
  "messages": [{"role": "user", "content": "Name a colour."}],
  "max_tokens": 32
}'
echo

# "stream": true: one `data: {...}` event per chunk; the last before `data: [DONE]` holds the trace.
curl -sS -N --fail-with-body "$URL/chat/completions" -H "$AUTH" -H "Content-Type: application/json" -d '{
  "model": "single",
  "messages": [{"role": "user", "content": "Name a colour."}],
  "max_tokens": 32,
  "stream": true
}'
