"""The cascade config file (`cascade.toml`): reading, validating, writing, and what to warn about.

    config = load_cascade_config("cascade.toml")      # one-line ConfigError naming file and field
    write_cascade_config(config, "cascade.toml")      # read back unchanged
    for warning in config_warnings(config): ...       # not calibrated; a student that failed its self-check

`Cascade.from_config` (routing/cascade.py) turns a config into a running cascade; this module
loads no model except in `load_tier_models`.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from distillery.errors import ConfigError, DistilleryError
from distillery.models import load_model, split_uri
from distillery.models.base import ChatModel
from distillery.pricing import price_for
from distillery.routing.confidence import get_scorer

EscalateMode = Literal["step", "task", "restart"]
ESCALATE_MODES = ("step", "task", "restart")
FallbackPolicy = Literal["keep_flagged", "fail"]
DEFAULT_SCORER = "logprob-mean"
DEFAULT_FALLBACK_TIMEOUT_S = 120.0
# Keys a [[tiers]] entry may also carry at its top level: shorthands for the same key in `options`.
TIER_OPTION_SHORTHANDS = ("base_url",)

@dataclass
class TierConfig:
    """One tier as a config file names it. `options` are passed to `load_model(model, **options)`."""

    model: str
    threshold: float | None = None
    scorer: str | None = None
    timeout_s: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class CascadeConfig:
    """A cascade as written in `cascade.toml`: tiers cheapest first, the teacher last."""

    tiers: list[TierConfig]
    escalate: EscalateMode = "step"
    on_fallback_error: FallbackPolicy = "keep_flagged"
    fallback_timeout_s: float = DEFAULT_FALLBACK_TIMEOUT_S
    calibration: dict[str, Any] = field(default_factory=dict)
    source: str = "<config>"

    @property
    def thresholds(self) -> list[float]:
        return [tier.threshold for tier in self.tiers[:-1]]  # type: ignore[misc]

    def scorer_names(self) -> list[str | None]:
        """Each tier's scorer: the one it names, else the default (`default_scorers`)."""
        return [tier.scorer or default for tier, default in zip(self.tiers, default_scorers(len(self.tiers)))]

    def validate(self) -> CascadeConfig:
        """Check every field; raise a one-line `ConfigError` naming the file and field."""
        where = self.source
        if len(self.tiers) < 1:
            raise ConfigError(f"{where}: a cascade needs at least one [[tiers]] entry")
        if self.escalate not in ESCALATE_MODES:
            raise ConfigError(f"{where}: escalate = {self.escalate!r}; use \"step\", \"task\" or \"restart\"")
        if self.on_fallback_error not in ("keep_flagged", "fail"):
            raise ConfigError(f"{where}: on_fallback_error = {self.on_fallback_error!r}; use \"keep_flagged\" or \"fail\"")
        if not _positive_seconds(self.fallback_timeout_s):
            raise ConfigError(f"{where}: fallback_timeout_s = {self.fallback_timeout_s!r}: give a finite, positive "
                              "number of seconds")
        last = len(self.tiers) - 1
        for index, tier in enumerate(self.tiers):
            field_name = f"tiers[{index}]"
            if not isinstance(tier.model, str) or not tier.model:
                raise ConfigError(f"{where}: {field_name}.model is missing")
            try:
                split_uri(tier.model)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {field_name}.model: {exc}") from None
            if index < last or len(self.tiers) == 1:
                if tier.threshold is None and len(self.tiers) > 1:
                    raise ConfigError(f"{where}: {field_name}.threshold is missing (every tier but the last needs one)")
            elif tier.threshold is not None:
                raise ConfigError(
                    f"{where}: {field_name}.threshold: the last tier is the fallback of last resort and takes no threshold"
                )
            if tier.threshold is not None and (not is_number(tier.threshold) or not 0.0 <= tier.threshold <= 1.0):
                raise ConfigError(f"{where}: {field_name}.threshold = {tier.threshold!r} is outside [0, 1]")  # NaN too
            if tier.scorer is not None:
                try:
                    _check_scorer_name(tier.scorer)
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {field_name}.scorer: {exc}") from None
            if tier.timeout_s is not None and not _positive_seconds(tier.timeout_s):
                raise ConfigError(f"{where}: {field_name}.timeout_s = {tier.timeout_s!r}: give a finite, positive "
                                  "number of seconds")
            if not isinstance(tier.options, dict):
                raise ConfigError(f"{where}: {field_name}.options must be a table, e.g. options = {{ base_url = \"...\" }}")
            if "base_url" in tier.options and (problem := _url_problem(tier.options["base_url"])):
                raise ConfigError(f"{where}: {field_name}.base_url = {tier.options['base_url']!r}: {problem}")
        check_tier_order([tier.model for tier in self.tiers], where=where)
        return self


def default_scorers(n_tiers: int, scorer: Any = DEFAULT_SCORER) -> list[Any]:
    """The scorer of each tier when none is named: `scorer` on every tier that can escalate, None on
    the last (it is never questioned). A lone tier is scored, so its confidences are recorded."""
    if n_tiers == 1:
        return [scorer]
    return [scorer] * (n_tiers - 1) + [None]


def is_number(value: Any) -> bool:
    """A real int or float (a TOML `true` is not a number)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _positive_seconds(value: Any) -> bool:
    """A timeout: a number, finite (TOML has nan and inf) and above 0."""
    return is_number(value) and math.isfinite(value) and value > 0


def _url_problem(value: Any) -> str | None:
    """Why `value` is not a server URL a tier can be sent to (None when it is one): an http(s) URL string with a host."""
    if not isinstance(value, str):
        return "not a string; give the server's URL, e.g. \"http://localhost:8000/v1\""
    if any(c.isspace() or not c.isprintable() for c in value):
        return "a URL cannot hold spaces or control characters"
    try:
        parts = urlsplit(value)
    except ValueError as exc:  # an unclosed [IPv6 address
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "not an http(s) URL with a host, e.g. \"http://localhost:8000/v1\""
    try:
        port = parts.port  # raises ValueError for a port that is not a number in 0-65535
    except ValueError:
        port = 0
    return "its port is not a number from 1 to 65535" if port == 0 else None


def _check_scorer_name(spec: str) -> None:
    # Learned scorers load a file; check only the name here so a config validates before fitting.
    if spec.startswith("learned:"):
        return
    get_scorer(spec)


def _price_per_mtok(uri: str) -> float | None:
    """Input + output list price per million tokens, for ordering tiers; None when the table has none."""
    price = price_for(uri)
    return (price.input + price.output) if price else None


def check_tier_order(models: Sequence[str], *, where: str = "cascade") -> None:
    """Tiers must go cheapest first: a priced tier cheaper than an earlier priced tier is a mistake.

    Models the price table does not know (your own `hf:` checkpoints) cannot be ordered by price,
    so they are skipped rather than guessed at.
    """
    priced = [(i, m, _price_per_mtok(m)) for i, m in enumerate(models)]
    priced = [(i, m, p) for i, m, p in priced if p is not None]
    for (i0, m0, p0), (i1, m1, p1) in zip(priced, priced[1:]):
        if p1 < p0:
            raise ConfigError(
                f"{where}: tiers[{i1}] ({m1}, ${p1:g}/Mtok in+out) is cheaper than tiers[{i0}] "
                f"({m0}, ${p0:g}/Mtok); order tiers cheapest first, teacher last"
            )


def load_cascade_config(path: str | Path) -> CascadeConfig:
    """Read and validate `cascade.toml`. Errors are one line naming the file and the field."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such cascade config (write one with `distillery calibrate`)") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a cascade config is TOML") from None
    except OSError as exc:  # a directory, no permission
        raise ConfigError(f"{path}: cannot read the cascade config ({exc.strerror or exc})") from None
    known = {"tiers", "escalate", "on_fallback_error", "fallback_timeout_s", "calibration"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    tiers_raw = raw.get("tiers")
    if not isinstance(tiers_raw, list) or not tiers_raw:
        raise ConfigError(f"{path}: no [[tiers]] entries; list the models cheapest first, teacher last")
    tiers = []
    tier_fields = {"model", "threshold", "scorer", "timeout_s", "options", *TIER_OPTION_SHORTHANDS}
    for index, entry in enumerate(tiers_raw):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: tiers[{index}] must be a table ([[tiers]])")
        extra = sorted(set(entry) - tier_fields)
        if extra:
            raise ConfigError(
                f"{path}: tiers[{index}]: unknown key(s) {', '.join(extra)}; known: {', '.join(sorted(tier_fields))} "
                f"(model settings go in options = {{ key = value }})"
            )
        if not isinstance(entry.get("options", {}), dict):
            raise ConfigError(f"{path}: tiers[{index}].options must be a table, e.g. options = {{ base_url = \"...\" }}")
        options = dict(entry.get("options", {}))
        for key in TIER_OPTION_SHORTHANDS:
            if key not in entry:
                continue
            if key in options and options[key] != entry[key]:
                raise ConfigError(
                    f"{path}: tiers[{index}].{key} = {entry[key]!r} conflicts with tiers[{index}].options.{key} = "
                    f"{options[key]!r}; give it once"
                )
            options[key] = entry[key]
        tiers.append(TierConfig(
            model=entry.get("model", ""),
            threshold=entry.get("threshold"),
            scorer=entry.get("scorer"),
            timeout_s=entry.get("timeout_s"),
            options=options,
        ))
    if not isinstance(raw.get("calibration", {}), dict):
        raise ConfigError(f"{path}: calibration must be a table ([calibration], as `distillery calibrate` writes it)")
    config = CascadeConfig(
        tiers=tiers,
        escalate=raw.get("escalate", "step"),
        on_fallback_error=raw.get("on_fallback_error", "keep_flagged"),
        fallback_timeout_s=raw.get("fallback_timeout_s", DEFAULT_FALLBACK_TIMEOUT_S),
        calibration=dict(raw.get("calibration", {})),
        source=str(path),
    )
    return config.validate()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if value is None:
        raise ValueError("TOML has no null")
    return _toml_value(str(value))


def _toml_key(key: str) -> str:
    return key if key.replace("_", "").replace("-", "").isalnum() else _toml_value(key)


def write_cascade_config(config: CascadeConfig, path: str | Path, *, header: str = "") -> None:
    """Write a config `load_cascade_config` reads back unchanged (thresholds as calibrated)."""
    config.validate()
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += [
        "# Tiers go cheapest first; the last tier (the teacher) takes no threshold.",
        "# A step escalates when its confidence < threshold, or it is unscored (routing/decision.py).",
        f"escalate = {_toml_value(config.escalate)}",
        f"on_fallback_error = {_toml_value(config.on_fallback_error)}",
        f"fallback_timeout_s = {_toml_value(float(config.fallback_timeout_s))}",
        "",
    ]
    for tier in config.tiers:
        lines.append("[[tiers]]")
        lines.append(f"model = {_toml_value(tier.model)}")
        if tier.threshold is not None:
            lines.append(f"threshold = {_toml_value(float(tier.threshold))}")
        if tier.scorer is not None:
            lines.append(f"scorer = {_toml_value(tier.scorer)}")
        if tier.timeout_s is not None:
            lines.append(f"timeout_s = {_toml_value(float(tier.timeout_s))}")
        if tier.options:
            lines.append(f"options = {_toml_value(tier.options)}")
        lines.append("")
    if config.calibration:
        lines.append("[calibration]")
        for key, value in config.calibration.items():
            if value is not None:
                lines.append(f"{_toml_key(key)} = {_toml_value(value)}")
        lines.append("")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text("\n".join(lines))


def load_tier_models(config: CascadeConfig) -> list[ChatModel]:
    """Load every tier's model by URI; a failure is a one-line error naming the file and the tier."""
    models = []
    for index, tier in enumerate(config.tiers):
        try:
            models.append(load_model(tier.model, **tier.options))
        except DistilleryError as exc:
            raise ConfigError(f"{config.source}: tiers[{index}].model: {exc}") from None
    return models



# --------------------------------------------------------------------------------------------------
# Warnings: a config that loads but should not be trusted yet
# --------------------------------------------------------------------------------------------------

SELF_CHECK_FILE = "distillation.json"


def calibration_warning(config: CascadeConfig) -> str | None:
    """A warning when the config has no `[calibration]` table: its thresholds were never chosen on validation."""
    if config.calibration or len(config.tiers) < 2:
        return None
    return (
        f"{config.source} has no [calibration] table: its thresholds were never calibrated on validation tasks, "
        "so how often it escalates (and how good its answers are) is unknown; run `distillery calibrate "
        f"--config {config.source} --tasks VALIDATION.jsonl` first"
    )


def self_check_warning(uri: str, *, field_name: str = "model") -> str | None:
    """The warning a local (`hf:`) student's `distillation.json` carries when it failed its self-check.

    `distillery train` records whether the trained student reproduces its own training data
    (`"self_check": {"examples", "valid_format", "exact_calls", "exact_answers", "ok", "warning"}`).
    A student that cannot is not worth serving, however confident it sounds. Missing files, runs
    without a self-check (older ones) and other providers give None.
    """
    try:
        scheme, name = split_uri(uri)
    except ConfigError:
        return None
    if scheme != "hf":
        return None
    report = Path(name).expanduser() / SELF_CHECK_FILE
    try:
        data = json.loads(report.read_text())
    except (OSError, UnicodeDecodeError):
        return None
    except json.JSONDecodeError as exc:
        return f"{field_name} {uri}: {report} is not valid JSON (line {exc.lineno}); its self-check cannot be read"
    check = data.get("self_check") if isinstance(data, dict) else None
    if not isinstance(check, dict) or check.get("ok") is not False:
        return None
    detail = check.get("warning") or _self_check_summary(check)
    return f"{field_name} {uri} failed its self-check ({report}): {detail}"


def _self_check_summary(check: dict[str, Any]) -> str:
    parts = [f"{key.replace('_', ' ')} {check[key]:.0%}" for key in ("valid_format", "exact_calls", "exact_answers")
             if isinstance(check.get(key), (int, float)) and not isinstance(check.get(key), bool)]
    examples = check.get("examples")
    on = f" on {examples} training examples" if isinstance(examples, int) else ""
    return "the student does not reproduce its training data" + (f" ({', '.join(parts)}{on})" if parts else "")


def config_warnings(config: CascadeConfig, *, calibration: bool = True) -> list[str]:
    """Everything worth a warning before serving or evaluating `config`: an uncalibrated config and
    each local student whose `distillation.json` self-check failed. Never raises."""
    warnings = []
    for index, tier in enumerate(config.tiers):
        warning = self_check_warning(tier.model, field_name=f"tiers[{index}].model")
        if warning:
            warnings.append(warning)
    if calibration and (warning := calibration_warning(config)):
        warnings.append(warning)
    return warnings


__all__ = [
    "CascadeConfig",
    "DEFAULT_FALLBACK_TIMEOUT_S",
    "DEFAULT_SCORER",
    "ESCALATE_MODES",
    "TierConfig",
    "calibration_warning",
    "default_scorers",
    "check_tier_order",
    "config_warnings",
    "load_cascade_config",
    "load_tier_models",
    "self_check_warning",
    "write_cascade_config",
]
