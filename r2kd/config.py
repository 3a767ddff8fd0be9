"""Typed, validated parameters: params.yaml is read once into a :class:`Params` object.

Each subsystem owns the model of its own section (data, prune, each distiller's hyper-parameters);
this module composes them and adds the cross-field rules. Any violation raises ConfigError naming the
key, the value and what is allowed, before any compute starts.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from r2kd.augment import VIEWS
from r2kd.data.config import DataConfig
from r2kd.distillers import DISTILLERS
from r2kd.errors import ConfigError
from r2kd.pruning.config import PruneConfig

PARAMS_FILE = "params.yaml"
DEFAULT_AUGMENT = "default"  # in `augments`: each method's own aug_view


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrainRecipe(_Strict):
    """SGD with step decay, METHOD.md §7."""

    epochs: int = Field(gt=0)
    batch_size: int = Field(gt=0)
    lr: float = Field(gt=0)
    momentum: float = Field(ge=0, lt=1)
    weight_decay: float = Field(ge=0)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(gt=0, le=1, default=0.1)

    @field_validator("milestones")
    @classmethod
    def _increasing(cls, value: list[int]) -> list[int]:
        if any(b <= a for a, b in zip(value, value[1:])) or any(m <= 0 for m in value):
            raise ValueError(f"must be positive and strictly increasing, got {value}")
        return value


class TeacherRecipe(TrainRecipe):
    seed: int = Field(default=42, ge=0, description="teachers are trained once per (data, arch, seed)")


class TeacherSource(_Strict):
    """Train the teacher, or import a pretrained {"model": state_dict} file verified by SHA-256."""

    checkpoint: str | None = None
    checkpoint_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")

    @model_validator(mode="after")
    def _sha_with_checkpoint(self) -> "TeacherSource":
        if self.checkpoint and not self.checkpoint_sha256:
            raise ValueError("checkpoint_sha256 is required when checkpoint is set")
        return self


class Pair(_Strict):
    teacher: str
    student: str

    @property
    def id(self) -> str:
        return f"{self.teacher}-{self.student}"


class Runtime(_Strict):
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d+)?|mps)$")
    amp: Literal["none", "bf16", "fp16"] = "none"
    threads: int = Field(default=1, ge=0)
    deterministic: bool = True


class Resources(_Strict):
    """Snakemake scheduling hints (threads come from runtime.threads)."""

    mem_mb: int = Field(default=4000, gt=0)
    runtime: int = Field(default=60, gt=0, description="minutes")
    gpu: int = Field(default=0, ge=0)


class Params(_Strict):
    data: DataConfig = DataConfig()
    teachers: dict[str, TeacherSource]
    pairs: list[Pair] = Field(min_length=1)
    methods: list[str] = Field(min_length=1)
    augments: list[str] = Field(default_factory=lambda: [DEFAULT_AUGMENT], min_length=1)
    seeds: list[int] = Field(min_length=1)
    train_teacher: TeacherRecipe
    prune: PruneConfig = PruneConfig()
    distill: TrainRecipe
    method_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    runtime: Runtime = Runtime()
    resources: dict[str, Resources] = Field(default_factory=lambda: {"default": Resources()})

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        from r2kd import models

        known_models = set(models.available())
        for name in self.teachers:
            if name not in known_models:
                raise ValueError(f"teachers: unknown architecture {name!r}; known: {sorted(known_models)}")
        for i, pair in enumerate(self.pairs):
            if pair.teacher not in self.teachers:
                raise ValueError(
                    f"pairs[{i}].teacher: {pair.teacher!r} is not a key of `teachers` ({sorted(self.teachers)})"
                )
            if pair.student not in known_models:
                raise ValueError(f"pairs[{i}].student: unknown architecture {pair.student!r}; known: {sorted(known_models)}")
        unused = set(self.teachers) - {p.teacher for p in self.pairs}
        if unused:
            raise ValueError(f"teachers: {sorted(unused)} used by no pair; remove them or add a pair")
        for pair in self.pairs:
            sizes = {arch: models.count_parameters(models.create(arch, 100)) for arch in (pair.teacher, pair.student)}
            if sizes[pair.teacher] < sizes[pair.student]:
                warnings.warn(
                    f"pairs: teacher {pair.teacher} ({sizes[pair.teacher]:,} params) is smaller than its student "
                    f"{pair.student} ({sizes[pair.student]:,}); allowed, but unusual"
                )
        if len({p.id for p in self.pairs}) != len(self.pairs):
            raise ValueError("pairs: the same teacher -> student pair is listed twice")
        for key, values in (("methods", self.methods), ("augments", self.augments), ("seeds", self.seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: duplicate entries in {values}")
        for name in self.methods:
            if name not in DISTILLERS:
                raise ValueError(f"methods: unknown method {name!r}; known: {sorted(DISTILLERS)}")
        for name in self.method_params:
            if name not in DISTILLERS:
                raise ValueError(f"method_params: unknown method {name!r}; known: {sorted(DISTILLERS)}")
        for name in self.methods:
            # DVC tracks `method_params.<name>` per stage, so the entry must exist (even if empty).
            if name not in self.method_params:
                raise ValueError(f"method_params.{name}: missing; add `{name}: {{}}` for the published defaults")
        allowed_augments = {DEFAULT_AUGMENT, *VIEWS}
        for aug in self.augments:
            if aug not in allowed_augments:
                raise ValueError(f"augments: unknown augment {aug!r}; allowed: {sorted(allowed_augments)}")
        for name, recipe in (("train_teacher", self.train_teacher), ("distill", self.distill)):
            late = [m for m in recipe.milestones if m >= recipe.epochs]
            if late:
                warnings.warn(f"{name}.milestones {late} are >= {name}.epochs ({recipe.epochs}) and never apply")
        if "default" not in self.resources:
            raise ValueError("resources: a `default` entry is required")
        return self

    def method_hparams(self, method: str, augment: str = DEFAULT_AUGMENT) -> BaseModel:
        """The validated hyper-parameters of one method, with the run's augment applied."""
        raw = dict(self.method_params.get(method, {}))
        if augment != DEFAULT_AUGMENT:
            raw["aug_view"] = augment
        return _validate_section(DISTILLERS[method].Params, raw, f"method_params.{method}")

    def resources_for(self, stage_group: str) -> Resources:
        return self.resources.get(stage_group, self.resources["default"])


def _validate_section(model: type[BaseModel], raw: Any, where: str) -> BaseModel:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, prefix=where)) from None


def _format_errors(exc: ValidationError, prefix: str = "") -> str:
    lines = [f"invalid parameters in {PARAMS_FILE}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see params.yaml for the allowed keys)"
        if not err["loc"]:  # a cross-field rule: its message already names the keys
            lines.append(f"  {msg}")
            continue
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {err.get('input')!r})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def parse_params(raw: Any) -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{PARAMS_FILE} must be a mapping of sections, got {type(raw).__name__}")
    params = _validate_section(Params, raw, "")
    for method in params.methods:  # validate every method's section now, not when its stage runs
        for augment in params.augments:
            params.method_hparams(method, augment)
    return params


@functools.lru_cache(maxsize=None)
def _load_cached(path: str, mtime_ns: int) -> Params:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; run from the repository root") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return parse_params(raw)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml once per process (re-read only if the file changed)."""
    path = Path(path)
    mtime = path.stat().st_mtime_ns if path.exists() else 0
    return _load_cached(str(path), mtime)


def section(params: Params, dotted: str) -> Any:
    """A params.yaml value by its dotted key, as plain data (for provenance records)."""
    node: Any = params.model_dump(mode="json")
    for part in dotted.split("."):
        node = node[part]
    return node
