"""Mixture of Thoughts over the two real packaged experts (SmolLM2-135M, Gemma-3-270m), loaded once
for the module from their dequantised GGUFs: training touches only the router and the interaction
layers, an untrained MoT is its primary, checkpoints round-trip, generation changes only through
the interaction, and a streamed chat request runs through the API."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import pytest_asyncio
from conftest import MODEL_CACHE, REPO, write_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

from coe.config import Settings  # noqa: E402
from coe.errors import ConfigError  # noqa: E402
from coe.mot import checkpoint  # noqa: E402
from coe.mot.config import DEFAULT, MotConfig, read_config  # noqa: E402
from coe.mot.data import Example, make_example  # noqa: E402
from coe.mot.experts import FrozenExpert, load_expert, model_dir  # noqa: E402
from coe.mot.generate import Finished, Generator  # noqa: E402
from coe.mot.model import MixtureOfThoughts, Route  # noqa: E402
from coe.mot.train import TrainOptions, train  # noqa: E402
from coe.questions.datasets import Question  # noqa: E402

QUESTIONS = [
    Question(1, "What is 2 + 2?", ("3", "4", "5", "22"), "B", "math"),
    Question(2, "Which planet is closest to the Sun?", ("Venus", "Earth", "Mercury", "Mars"), "C", "physics"),
]
CHAT = [{"role": "user", "content": "Name a colour."}]


@pytest.fixture(scope="module")
def experts() -> list[FrozenExpert]:
    torch.set_num_threads(1)  # fastest on a busy 2-core machine
    return [load_expert(spec, MODEL_CACHE) for spec in DEFAULT.experts]


@pytest.fixture(scope="module")
def examples(experts: list[FrozenExpert]) -> list[Example]:
    return [make_example(q, experts) for q in QUESTIONS]


def fresh(experts: list[FrozenExpert], seed: int = 0) -> MixtureOfThoughts:
    torch.manual_seed(seed)
    return checkpoint.build(DEFAULT, MODEL_CACHE, experts)


def perturb(model: MixtureOfThoughts, std: float = 0.5) -> None:
    """Give the zero-initialised output projections weight, as training would."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for projections in model.interaction.out.values():
            for linear in projections:
                linear.weight.copy_(torch.randn(linear.weight.shape, generator=generator) * std)


def test_training_leaves_every_expert_weight_bit_identical(
    experts: list[FrozenExpert], examples: list[Example]
) -> None:
    from safetensors import safe_open

    model = fresh(experts)
    trainable = {id(p) for p in model.parameters()}
    assert all(id(p) not in trainable and not p.requires_grad for e in experts for p in e.model.parameters())
    assert sum(p.numel() for p in model.parameters()) < 5_000_000  # router + interaction only
    summary = train(model, examples, TrainOptions(steps=2, batch=2, lr=1e-2, progress=False))
    assert summary["steps"] == 2 and summary["examples_seen"] == 4
    for expert in experts:
        state = expert.model.state_dict()
        with safe_open(str(model_dir(expert.spec, MODEL_CACHE) / "model.safetensors"), "pt") as saved:
            keys = list(saved.keys())
            assert keys
            for key in keys:
                assert torch.equal(state[key], saved.get_tensor(key)), f"{expert.name}: {key} changed"


def test_gradients_reach_the_interaction_layers_and_the_router(
    experts: list[FrozenExpert], examples: list[Example]
) -> None:
    from coe.mot.train import batch_loss, embed

    model = fresh(experts)
    embeddings = embed(examples)
    optimiser = torch.optim.AdamW(model.parameters(), lr=1e-2)

    def backward() -> None:
        optimiser.zero_grad()
        batch_loss(model, examples, embeddings)["loss"].backward()

    backward()
    # At step 0 the output projections are zero: they are what first learns.
    route = model.route(embeddings[0])
    primary = model.experts[route.primary].name
    assert all(float(p.grad.abs().sum()) > 0 for p in model.interaction.out[primary].parameters())
    # Then (here: once both experts' projections have weight) the rest learns too.
    perturb(model, std=0.01)
    backward()
    peer = model.experts[route.peers[0]].name
    reached = {
        "router": model.router,
        "query": model.interaction.query,
        "key": model.interaction.key,
        "value": model.interaction.value,
        f"adapter:{primary}": model.interaction.adapters[primary],
        f"adapter:{peer}": model.interaction.adapters[peer],
        f"out:{primary}": model.interaction.out[primary],
    }
    assert {model.experts[model.route(e).primary].name for e in embeddings} == {primary}
    for name, module in reached.items():
        for param in module.parameters():
            assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


def test_zero_output_projection_gives_the_primary_alone(
    experts: list[FrozenExpert], examples: list[Example]
) -> None:
    model = fresh(experts)
    probs = torch.tensor([0.5, 0.5])
    for active in ([0, 1], [1, 0]):
        route = Route(probs, active)
        p = route.primary
        states = {i: model.hidden_states(model.experts[i], examples[0].prompt_ids[i])[0] for i in route.peers}
        ids = examples[0].prompt_ids[p]
        with torch.no_grad():
            alone = model.primary_logits(model.experts[p], ids, None, keep=len(ids))
            mixed = model.primary_logits(model.experts[p], ids, model.peers(route, states), keep=len(ids))
            assert torch.equal(alone, mixed)
            perturb(model)
            changed = model.primary_logits(model.experts[p], ids, model.peers(route, states), keep=len(ids))
            assert not torch.equal(alone, changed)
            model = fresh(experts)


def test_checkpoint_round_trips(experts: list[FrozenExpert], tmp_path: Path) -> None:
    model = fresh(experts, seed=3)
    perturb(model)
    model.config = model.config.model_copy(update={"trained": {"steps": 1}})
    path = tmp_path / "mot" / "mot.json"
    assert checkpoint.missing(path) == f"no MoT checkpoint at {path} (coe train mot writes it)"
    checkpoint.save(model, path, "coe train mot --steps 1")
    assert path.with_suffix(".command").read_text().splitlines()[1] == "coe train mot --steps 1"
    assert (tmp_path / "mot" / "mot.safetensors").stat().st_size < 20_000_000
    loaded = checkpoint.load(path, MODEL_CACHE, experts)
    assert loaded.config == model.config and read_config(path).trained == {"steps": 1}
    before, after = model.state_dict(), loaded.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # a config whose shapes do not fit the weights is a clear error
    other = MotConfig.model_validate({**model.config.model_dump(), "latent": 128})
    path.write_text(other.model_dump_json())
    with pytest.raises(ConfigError, match="weights do not fit the config"):
        checkpoint.load(path, MODEL_CACHE, experts)
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"mot\.json:1:2"):
        read_config(path)


def _generate(generator: Generator, interact: bool) -> tuple[str, Finished]:
    pieces = list(generator.generate(CHAT, 6, interact=interact))
    finished = pieces.pop()
    assert isinstance(finished, Finished)
    return "".join(str(p) for p in pieces), finished


def test_generation_changes_only_through_the_interaction(experts: list[FrozenExpert]) -> None:
    generator = Generator(fresh(experts))
    alone, alone_end = _generate(generator, interact=False)
    mixed, mixed_end = _generate(generator, interact=True)
    assert alone and alone_end.peers == () and mixed_end.peers  # the peer really ran
    assert mixed == alone  # zero output projections: nothing crosses over
    assert mixed_end.prompt_tokens > alone_end.prompt_tokens  # the peer's prompt counts
    perturb(generator.model, std=2.0)
    changed, _ = _generate(generator, interact=True)
    assert changed != alone
    assert _generate(generator, interact=False)[0] == alone  # and without peers, nothing changed


@pytest_asyncio.fixture
async def mot_app(experts: list[FrozenExpert], tmp_path: Path) -> AsyncIterator[object]:
    from coe.api.app import create_app
    from coe.service import Service

    model = fresh(experts)
    checkpoint.save(model, tmp_path / "ck" / "mot.json")
    graphs = tmp_path / "graphs"
    graphs.mkdir()
    text = (REPO / "graphs" / "mot.yaml").read_text()
    (graphs / "mot.yaml").write_text(
        text.replace("../config/mot/mot.json", str(tmp_path / "ck" / "mot.json"))
    )
    settings = Settings.load(write_settings(tmp_path, graphs_dir=graphs))
    app = create_app(settings, lambda s: Service(s, experts=[], start_redis=False))
    async with app.router.lifespan_context(app):
        yield app


@pytest.mark.asyncio
async def test_streamed_chat_through_the_api(mot_app: object) -> None:
    transport = httpx.ASGITransport(app=mot_app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://coe") as http:
        assert (await http.get("/healthz")).status_code == 200  # the models are not loaded yet
        assert "mot" in [m["id"] for m in (await http.get("/v1/models")).json()["data"]]
    async with openai.AsyncOpenAI(
        base_url="http://coe/v1",
        api_key="none",
        max_retries=0,
        http_client=httpx.AsyncClient(transport=transport),
    ) as client:
        stream = await client.chat.completions.create(model="mot", messages=CHAT, max_tokens=4, stream=True)  # type: ignore[arg-type]
        pieces, trace, finish = [], None, None
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
                finish = chunk.choices[0].finish_reason or finish
            else:
                trace = chunk.model_extra["coe"] if chunk.model_extra else None
    assert "".join(pieces).strip()
    assert len([p for p in pieces if p]) >= 2  # token by token, not one piece
    assert finish in ("length", "stop")
    assert trace is not None and [c["expert"] for c in trace["calls"]] == ["mot"]
    assert trace["calls"][0]["completion_tokens"] <= 4


def test_mot_graph_is_skipped_without_a_checkpoint(tmp_path: Path) -> None:
    from coe.graph.catalog import unservable
    from coe.graph.loader import load_graph

    graph = tmp_path / "mot.yaml"
    graph.write_text((REPO / "graphs" / "mot.yaml").read_text())
    reason = unservable(load_graph(graph), [], [])
    where = tmp_path.parent / "config" / "mot" / "mot.json"
    assert reason == f"nodes.mot: no MoT checkpoint at {where} (coe train mot writes it)"


def test_train_mot_needs_data(capsys: pytest.CaptureFixture[str]) -> None:
    from coe.cli import main

    assert main(["train", "mot"]) == 2
    assert "needs --data-path" in capsys.readouterr().err


@pytest.fixture(autouse=True)
def _offline() -> Iterator[None]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    yield
