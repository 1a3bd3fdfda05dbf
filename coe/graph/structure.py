"""Checks on a graph's shape: every node reachable, no dead ends, every loop bounded by exactly one
stop node (which names the loop: its round counter and the answers it carries are its own)."""

from __future__ import annotations

from coe.graph.nodes.base import Loc, Problem
from coe.graph.spec import GraphSpec


def successors(spec: GraphSpec) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {name: [] for name in spec.nodes}
    for edge in spec.edges:
        out[edge.source].append(edge.target)
    for cond in spec.conditional_edges:
        out[cond.source] += [cond.then, cond.otherwise]
    for name, node in spec.nodes.items():
        if node.kind == "stop":
            out[name] += [str(node.params["next"]), str(node.params["done"])]
    return out


def _reachable(start: str, succ: dict[str, list[str]]) -> set[str]:
    seen, stack = {start}, [start]
    while stack:
        for nxt in succ[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return seen


def _cycles(succ: dict[str, list[str]]) -> list[list[str]]:
    """Groups of nodes that reach each other (the loops); graphs are small, so O(n²) is fine."""
    # nodes reachable from v in one step or more; v is on a loop when it reaches itself
    reach = {v: set().union(*(_reachable(w, succ) for w in succ[v])) for v in succ}
    found: list[list[str]] = []
    seen: set[str] = set()
    for v in succ:
        if v in seen or v not in reach[v]:
            continue
        component = [w for w in succ if w in reach[v] and v in reach[w]]
        seen.update(component)
        found.append(component)
    return found


def _outgoing_problems(spec: GraphSpec, succ: dict[str, list[str]]) -> list[Problem]:
    problems: list[Problem] = []
    plain = {e.source for e in spec.edges}
    branching = {c.source for c in spec.conditional_edges}
    for name, node in spec.nodes.items():
        loc: Loc = ("nodes", name)
        if name == spec.exit:
            if succ[name]:
                problems.append((("exit",), f"the exit node {name!r} must have no outgoing edges"))
        elif not succ[name]:
            problems.append((loc, f"node {name!r} is a dead end: add an edge from it"))
        if (node.kind == "stop" and name in plain | branching) or (name in plain and name in branching):
            problems.append((loc, f"node {name!r} has both fixed and conditional outgoing edges"))
        elif (
            sum(e.source == name for e in spec.edges) > 1
            or sum(c.source == name for c in spec.conditional_edges) > 1
        ):
            problems.append(
                (
                    loc,
                    f"node {name!r} has more than one outgoing edge: parallel branches come from a "
                    "propose node (one branch per proposer); to choose a way, use conditional_edges",
                )
            )
    return problems


def loops(spec: GraphSpec) -> dict[str, str]:
    """Node name -> the stop node of the loop it is part of (nodes outside loops are absent)."""
    out: dict[str, str] = {}
    for component in _cycles(successors(spec)):
        stops = [n for n in component if spec.nodes[n].kind == "stop"]
        if len(stops) == 1:
            out.update(dict.fromkeys(component, stops[0]))
    return out


def _loop_problems(spec: GraphSpec, component: list[str]) -> list[Problem]:
    loop = " -> ".join([*component, component[0]])
    stops = [n for n in component if spec.nodes[n].kind == "stop"]
    if not stops:
        return [
            (
                ("nodes", component[0]),
                f"loop {loop} has no bound: route it through a stop node with max_rounds",
            )
        ]
    if len(stops) > 1:
        return [
            (
                ("nodes", stops[1]),
                f"loop {loop} has {len(stops)} stop nodes ({', '.join(stops)}): a loop has one stop "
                "node, which counts its rounds (give each loop its own nodes)",
            )
        ]
    stop = spec.nodes[stops[0]]
    judged = any(
        spec.nodes[n].kind == "select" and spec.nodes[n].params.get("decide_stop") is True for n in component
    )
    if stop.params.get("condition") == "judge-stop" and not judged:
        return [
            (
                ("nodes", stops[0], "condition"),
                "condition judge-stop needs a select node with decide_stop: true in the same loop",
            )
        ]
    return []


def problems(spec: GraphSpec) -> list[Problem]:
    succ = successors(spec)
    found = _outgoing_problems(spec, succ)
    reachable = _reachable(spec.entry, succ)
    found += [
        (("nodes", n), f"node {n!r} is unreachable from entry {spec.entry!r}")
        for n in spec.nodes
        if n not in reachable
    ]
    for component in _cycles(succ):
        found += _loop_problems(spec, component)
    return found
