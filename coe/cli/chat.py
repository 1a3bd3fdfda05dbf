"""``coe chat "TEXT"``: answer one message with a graph and print the answer and its trace."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", help="the user message")
    parser.add_argument("--graph", default="single", help="graph name (default: single)")
    parser.add_argument(
        "--url", help="base URL of a running coe (e.g. http://127.0.0.1:8000); default in-process"
    )
    parser.add_argument("--config", type=Path, help="settings file for in-process runs")
    parser.add_argument("--max-tokens", type=int, default=None)
    parser.add_argument("--json", action="store_true", help="print the full response as JSON")


def format_trace(trace: dict[str, Any]) -> str:
    lines = [f"graph {trace.get('graph')}  wall {trace.get('wall_s')}s  cost ${trace['usage']['cost']:.8f}"]
    for route in trace.get("route", []):
        lines.append(
            f"  route[{route['node']}] {route['router']}: {', '.join(route['experts'])}"
            f" (primary {route['primary']}, confidence {route['confidence']})"
        )
    for call in trace.get("calls", []):
        if "error" in call:
            lines.append(f"  call[{call['node']}] {call['expert']}: FAILED {call['error']}")
            continue
        answer = " ".join(str(call["answer"]).split())
        answer = answer if len(answer) <= 70 else answer[:67] + "..."
        lines.append(
            f"  call[{call['node']}] {call['expert']}: {call['latency_s']:.2f}s "
            f"{call['prompt_tokens']}+{call['completion_tokens']} tok: {answer}"
        )
    for item in trace.get("selections", []) + trace.get("stops", []):
        lines.append(f"  {item.get('node')}: {json.dumps({k: v for k, v in item.items() if k != 'node'})}")
    for agg in trace.get("aggregate", []):
        lines.append(f"  aggregate[{agg.get('node')}]: chose {', '.join(agg.get('chosen', []))}")
    return "\n".join(lines)


async def _in_process(args: argparse.Namespace) -> dict[str, Any]:
    from coe.api.protocol import ChatCompletionRequest, chat_completion
    from coe.config import Settings
    from coe.service import Service

    settings = Settings.load(args.config)
    request = ChatCompletionRequest.model_validate(
        {
            "model": args.graph,
            "messages": [{"role": "user", "content": args.text}],
            "max_tokens": args.max_tokens,
        }
    )
    async with Service(settings, start_redis=False) as service:
        result = await service.run(args.graph, request.chat_messages(), request.params())
    return chat_completion(result, args.graph)


def _remote(args: argparse.Namespace) -> dict[str, Any]:
    import httpx

    from coe.errors import InvalidRequest, UpstreamError

    try:
        response = httpx.post(
            args.url.rstrip("/") + "/v1/chat/completions",
            json={
                "model": args.graph,
                "messages": [{"role": "user", "content": args.text}],
                "max_tokens": args.max_tokens,
            },
            timeout=600,
        )
    except httpx.HTTPError as err:
        raise UpstreamError(f"cannot reach {args.url}: {err}") from None
    body: dict[str, Any] = response.json()
    if response.status_code >= 500:
        raise UpstreamError(body.get("error", {}).get("message", response.text))
    if response.status_code >= 400:
        raise InvalidRequest(body.get("error", {}).get("message", response.text))
    return body


def run(args: argparse.Namespace) -> int:
    body = _remote(args) if args.url else asyncio.run(_in_process(args))
    if args.json:
        print(json.dumps(body, indent=2, ensure_ascii=False))
        return 0
    print(body["choices"][0]["message"]["content"])
    print()
    print(format_trace(body["coe"]))
    return 0
