"""A MoT checkpoint: the config JSON, the router and interaction weights (safetensors) beside it,
and a ``.command`` sidecar with the command that rebuilt them."""

from __future__ import annotations

from pathlib import Path

from coe.errors import ConfigError
from coe.mot.config import MotConfig, read_config, write_config
from coe.mot.experts import FrozenExpert, load_expert
from coe.mot.model import MixtureOfThoughts, trainable_state


def weights_path(config_path: Path, config: MotConfig) -> Path:
    return config_path.parent / config.weights


def missing(config_path: Path) -> str | None:
    """Why the checkpoint at ``config_path`` cannot be served, or None (cheap: no model loads)."""
    if not config_path.exists():
        return f"no MoT checkpoint at {config_path} (coe train mot writes it)"
    try:
        config = read_config(config_path)
    except ConfigError as err:
        return str(err)
    weights = weights_path(config_path, config)
    if not weights.exists():
        return f"MoT weights {weights} are missing (coe train mot writes them)"
    return None


def build(
    config: MotConfig, models_cache: Path, experts: list[FrozenExpert] | None = None
) -> MixtureOfThoughts:
    """A fresh MoT (zero output projections) over the config's experts (loaded unless given)."""
    loaded = experts if experts is not None else [load_expert(spec, models_cache) for spec in config.experts]
    return MixtureOfThoughts(config, loaded)


def save(model: MixtureOfThoughts, config_path: Path, command: str = "") -> None:
    from safetensors.torch import save_file

    config_path.parent.mkdir(parents=True, exist_ok=True)
    write_config(model.config, config_path)
    weights = weights_path(config_path, model.config)
    save_file(trainable_state(model), str(weights), metadata={"format": "pt"})
    if command:
        names = f"{config_path.name}, {weights.name}"
        sidecar = config_path.with_suffix(".command")
        sidecar.write_text(
            f"# rebuilds {names} (run from the repository root)\n{command}\n", encoding="utf-8"
        )


def load(
    config_path: Path, models_cache: Path, experts: list[FrozenExpert] | None = None
) -> MixtureOfThoughts:
    """The MoT of a checkpoint, ready to run (experts loaded unless given)."""
    from safetensors.torch import load_file

    reason = missing(config_path)
    if reason is not None:
        raise ConfigError(reason)
    config = read_config(config_path)
    model = build(config, models_cache, experts)
    state = load_file(str(weights_path(config_path, config)))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ConfigError(f"{config_path}: weights do not fit the config: {err}") from None
    model.eval()
    return model
