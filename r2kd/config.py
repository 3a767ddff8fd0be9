"""The params.yaml schema: every parameter a user may change, typed and validated, in one module.

A leaf (pydantic and the YAML reader, never torch or the implementations), so `r2kd check` and
Snakemake's parse stay fast. Names that select an implementation are literals declared here
(tests/test_config.py keeps them equal to the registries). Every value that ends up in a shell
command or a path is restricted to a strict character set or a literal, and the pipeline's `check`
stage validates before DVC or Snakemake runs any other stage.
"""

from __future__ import annotations

import functools
import re
import warnings
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from r2kd import method_params, pipeline
from r2kd.errors import ConfigError
from r2kd.yamlfile import read_yaml

PARAMS_FILE = "params.yaml"
DEFAULT_AUGMENT = "default"  # in `augments`: each method's own aug_view

ModelName = Literal[
    "MobileNetV2", "ShuffleV1", "ShuffleV2", "resnet110", "resnet14", "resnet20", "resnet32", "resnet32x4",
    "resnet44", "resnet56", "resnet8", "resnet8x4", "vgg11", "vgg13", "vgg16", "vgg19", "vgg8", "wrn_16_1",
    "wrn_16_2", "wrn_40_1", "wrn_40_2",
    # ImageNet networks: torchvision's (tv_*) and mdistiller's MobileNet-V1 student
    "tv_resnet18", "tv_resnet34", "tv_resnet50", "tv_mobilenet_v2", "mobilenet_v1",
]
DatasetName = Literal[
    "digits", "cifar10", "cifar100", "tiny_imagenet", "imagefolder", "imagenet", "mnist", "kmnist", "fashion_mnist",
]
# Datasets that can be streamed from their files (an index, not pixels, in data/prepared; docs/data.md).
# Equal to the keys of r2kd.data.registry.INDEXERS (tests/test_stream.py).
STREAMABLE_DATASETS = ("imagefolder", "imagenet")
# Datasets that only stream: no in-memory builder (ImageNet's 1.28M images would be ~190 GB of uint8).
STREAM_ONLY_DATASETS = ("imagenet",)
# Datasets whose images are resized to data.image_size (the others have a fixed size), with its default.
RESIZED_DATASETS: dict[str, int | None] = {"imagefolder": None, "imagenet": 224}
# Datasets read from official files, whose copies data.checksums can pin (docs/data.md, "Your own copy").
PINNABLE_DATASETS = ("mnist", "kmnist", "fashion_mnist", "cifar10", "cifar100", "tiny_imagenet")
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

# The standard ImageNet evaluation resize: 256 for a 224 crop, kept proportional for other sizes.
EVAL_RESIZE_RATIO = 256 / 224
ViewName = Literal["none", "mixup", "cutmix", "cutout", "autoaugment", "cutmixpick"]
MethodName = Literal[method_params.names()]  # the modules of r2kd/method_params/
AugmentName = Literal["default", "none", "mixup", "cutmix", "cutout", "autoaugment", "cutmixpick"]
PruneMethod = Literal["l1_unstructured", "torch_pruning"]

# Model name -> the torchvision ImageNet weights (`teachers.<arch>.pretrained`) it can start from: the
# members of torchvision.models.get_model_weights(<its torchvision name>), minus the DEFAULT alias, whose
# meaning changes between torchvision releases. Kept here so validation needs no torchvision import;
# tests/test_imagenet_models.py keeps it equal to torchvision's enums.
PRETRAINED_WEIGHTS: dict[str, tuple[str, ...]] = {
    "tv_resnet18": ("IMAGENET1K_V1",),
    "tv_resnet34": ("IMAGENET1K_V1",),
    "tv_resnet50": ("IMAGENET1K_V1", "IMAGENET1K_V2"),
    "tv_mobilenet_v2": ("IMAGENET1K_V1", "IMAGENET1K_V2"),
}
# Data sets that can hold ImageNet's 1000 classes; the class count itself is checked by train_teacher.
PRETRAINED_DATASETS = ("imagenet", "imagefolder")

MAX_SEED = 2**32 - 1  # seeds are mixed into other seeds; larger values overflow torch's 64-bit seed
PAIR_ID = r"^[A-Za-z0-9_]+(-[A-Za-z0-9_]+)*$"  # becomes a stage name, a path and an argument
MAX_ID_LENGTH = 80  # a pair id's limit: with method, augment and seed, a stage name and path stay short


class _Strict(BaseModel):
    """The base of every section of the schema (tests/test_config.py checks that none escapes it)."""

    # strict: `epochs: true`, `seeds: ["0"]` or `lr: "0.1"` are errors, not silently coerced.
    # allow_inf_nan=False: `.inf` / `.nan` (valid YAML floats) are refused for every float field,
    # here rather than per field, so a new float param cannot forget it and fail only mid-run.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class DataConfig(_Strict):
    """Which dataset ``prepare`` materialises, where its source files are, and how much of it.

    ``train_limit`` / ``test_limit`` cap the number of images *per class* (the first ones in the
    source's order, after the digits split), so a capped set stays class-balanced and is the same
    on every run; they exist to make CPU smoke runs small, not to subsample for science.
    """

    name: DatasetName = "digits"
    # Where archives are (or will be downloaded to); for imagefolder, the folder holding train/ and val/.
    root: str = Field("data/raw", min_length=1, pattern=r"^[^\x00]+$")
    download: bool = False  # only with download: true is the network ever touched
    test_fraction: float = Field(0.3, gt=0.0, lt=1.0)  # digits only: it ships as one set
    split_seed: int = Field(0, ge=0, le=MAX_SEED)
    train_limit: int | None = Field(None, ge=1)
    test_limit: int | None = Field(None, ge=1)
    # imagefolder (required) and imagenet (default 224): images are resized / cropped to it.
    image_size: int | None = Field(None, ge=4, le=1024, validate_default=True)
    # storage (memory: decode into uint8 tensors; stream: an index, decoded each epoch; auto: stream past
    # memory_limit_mb), the streaming keys and checksums (your own copy's file -> SHA-256): docs/data.md.
    storage: Literal["auto", "memory", "stream"] = "auto"
    memory_limit_mb: int = Field(2048, ge=1, le=16_777_216)
    eval_resize: int | None = Field(None, ge=4, le=4096)  # null: round(image_size * 256 / 224)
    index_hash: Literal["sha256", "size"] = "sha256"
    checksums: dict[str, str] = Field(default_factory=dict)

    @field_validator("checksums", mode="after")
    @classmethod
    def _checksums_are_pins(cls, value: dict[str, str]) -> dict[str, str]:
        pins = {}
        for rel, digest in value.items():  # each key a plain relative POSIX path under data.root
            if not rel or "\x00" in rel or "\\" in rel:
                raise ValueError(f"data.checksums key {rel!r} must be a non-empty path with / separators")
            if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
                raise ValueError(f"data.checksums key {rel!r} must be relative to data.root, not absolute")
            if any(p in ("", ".", "..") for p in rel.split("/")):
                raise ValueError(f"data.checksums key {rel!r} must not contain '..', '.' or empty parts (a file under "
                                 "data.root, e.g. MNIST/raw/train-images-idx3-ubyte.gz)")
            if not isinstance(digest, str) or not _SHA256_HEX.fullmatch(digest):
                raise ValueError(f"data.checksums[{rel!r}] must be a SHA-256: 64 hex digits (found {digest!r}); "
                                 f"`sha256sum <file>` prints it")
            pins[rel] = digest.lower()
        return pins

    @field_validator("image_size", mode="after")
    @classmethod
    def _image_size_only_for_resized(cls, value: int | None, info: ValidationInfo) -> int | None:
        name = info.data.get("name")
        if name is None:  # the name itself failed validation; that error is reported
            return value
        if name not in RESIZED_DATASETS:
            if value is not None:
                raise ValueError(f"data.image_size only applies to names {sorted(RESIZED_DATASETS)}; "
                                 f"{name!r} has a fixed size")
            return value
        value = RESIZED_DATASETS[name] if value is None else value
        if value is None:
            raise ValueError(f"data.image_size is required for name {name!r} (images are resized to it)")
        return value

    @model_validator(mode="after")
    def _storage_options(self) -> "DataConfig":
        if self.checksums and self.name not in PINNABLE_DATASETS:
            raise ValueError(f"data.checksums applies to the official datasets {list(PINNABLE_DATASETS)}; "
                             f"{self.name!r} has no official files to pin")
        if self.storage == "stream" and self.name not in STREAMABLE_DATASETS:
            raise ValueError(f"data.storage: stream applies to names {list(STREAMABLE_DATASETS)}; "
                             f"{self.name!r} is small enough to keep in memory (use auto or memory)")
        if self.storage == "memory" and self.name in STREAM_ONLY_DATASETS:
            raise ValueError(f"data.storage: memory is not available for name {self.name!r} (too large to decode "
                             "into memory); use auto or stream")
        if self.eval_resize is not None:
            if self.name not in STREAMABLE_DATASETS:
                raise ValueError(f"data.eval_resize applies to the streamed names {list(STREAMABLE_DATASETS)} only")
            assert self.image_size is not None
            if self.eval_resize < self.image_size:
                raise ValueError(f"data.eval_resize ({self.eval_resize}) must be >= data.image_size "
                                 f"({self.image_size}): the centre crop is cut from the resized image")
        return self

    def resize_for_eval(self) -> int:
        """The shorter-side size the streaming eval transform resizes to before its centre crop."""
        assert self.image_size is not None
        return self.eval_resize if self.eval_resize is not None else round(self.image_size * EVAL_RESIZE_RATIO)


class TrainRecipe(_Strict):
    """SGD with step decay, METHOD.md §7."""

    epochs: int = Field(gt=0, le=100_000)
    batch_size: int = Field(gt=0, le=1_000_000)
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
    seed: int = Field(default=42, ge=0, le=MAX_SEED, description="teachers are trained once per (data, arch, seed)")


class TeacherSource(_Strict):
    """Where a teacher comes from: trained (nothing set), a {"model": state_dict} file verified by
    SHA-256 (``checkpoint`` + ``checkpoint_sha256``), or torchvision's published ImageNet weights
    (``pretrained``: a member name of the architecture's weights enum, e.g. IMAGENET1K_V1; r2kd/pretrained.py)."""

    checkpoint: str | None = Field(None, min_length=1, pattern=r"^[^\x00]+$")
    checkpoint_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    pretrained: str | None = Field(None, pattern=r"^[A-Z0-9_]{1,64}$")

    @model_validator(mode="after")
    def _sha_with_checkpoint(self) -> "TeacherSource":
        if self.checkpoint and not self.checkpoint_sha256:
            raise ValueError("checkpoint_sha256 is required when checkpoint is set")
        if self.checkpoint and self.pretrained:
            raise ValueError("set either checkpoint or pretrained, not both")
        return self


class PruneFinetune(TrainRecipe):
    """Recovery fine-tune of a structurally pruned teacher: plain CE on the prepared train split,
    SGD with step decay as :class:`TrainRecipe`, seeded from ``train_teacher.seed``."""

    epochs: int = Field(0, ge=0, le=100_000)  # 0: no fine-tune (the reference never retrains)
    batch_size: int = Field(64, gt=0, le=1_000_000)
    lr: float = Field(0.01, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0)

    def recipe(self) -> TrainRecipe:
        """The equivalent training recipe (only for epochs > 0)."""
        return TrainRecipe(**self.model_dump())


class PruneConfig(_Strict):
    """How the second (pruned) teacher is made from the trained teacher (METHOD.md §5, docs/prune.md)."""

    method: PruneMethod = "l1_unstructured"  # the reference's second teacher
    # Fraction of channels (torch_pruning) or of weights per layer (l1_unstructured) removed.
    ratio: float = Field(0.1, gt=0.0, lt=1.0)
    # The reference keeps the pruned copy in BatchNorm train mode (it only sets the teacher to eval).
    bn_mode: Literal["train", "eval"] = "train"
    importance_p: Literal[1, 2] = 2  # norm of torch_pruning's channel-magnitude importance
    # torch_pruning only: every pruned group keeps a multiple of round_to channels (rounded down,
    # never below round_to), so the pruned widths suit fast kernels. None: no rounding.
    round_to: int | None = Field(None, ge=2, le=1024)
    # torch_pruning only: a short plain-CE fine-tune of the pruned copy (epochs 0 = none, the reference).
    finetune: PruneFinetune = PruneFinetune()

    @model_validator(mode="after")
    def _structured_options(self) -> "PruneConfig":
        if self.method == "l1_unstructured":
            if self.round_to is not None:
                raise ValueError("prune.round_to applies to method torch_pruning only (l1_unstructured keeps every shape)")
            if self.finetune.epochs > 0:
                raise ValueError("prune.finetune.epochs > 0 applies to method torch_pruning only "
                                 "(fine-tuning would refill the weights l1_unstructured zeroed)")
        return self


class MethodParams(_Strict):
    """Fields every method shares. ``aug_view`` lets a baseline train under R2KD's augmentation."""

    aug_view: ViewName = "none"
    # autoaugment view only: one sub-policy per batch (the reference: torchvision v1 on the batch
    # tensor, pixels truncated to uint8) or one per image (torchvision v2, pixels rounded).
    autoaugment_per: Literal["batch", "image"] = "batch"


# Each method's own model lives in r2kd/method_params/<name>.py: adding a method edits no file every
# stage runs (this one). METHOD_PARAMS and the <Name>Params names are read from there on first use.
def __getattr__(name: str) -> Any:
    if name == "METHOD_PARAMS":
        return {m: method_params.module(m).PARAMS for m in method_params.names()}
    for method in method_params.names():
        model = method_params.module(method).PARAMS
        if model.__name__ == name:
            return model
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class EvaluateConfig(_Strict):
    """What the ``corrupt`` and ``evaluate`` stages score beyond clean accuracy (docs/robustness.md).

    ``corruption_limit`` caps the corrupted test set at that many images *per class* (the first ones
    of the prepared test split), so 15 corruptions x 5 severities stay small on a CPU.
    """

    corruptions: bool = True  # score every model on the 15 CIFAR-C corruptions x 5 severities
    corruption_limit: int | None = Field(20, ge=1, description="max test images per class; null: all")
    corruption_seed: int = Field(0, ge=0, le=MAX_SEED)  # the corrupted set is drawn once, from this seed


class ExportConfig(_Strict):
    """The ``export`` stage: every model to ONNX, checked against PyTorch, timed with onnxruntime."""

    onnx: bool = True
    # torchscript: torch.onnx.export(dynamo=False), ~0.4 s a model; dynamo: the torch.export-based
    # exporter, ~2 s a model on one CPU thread. Both work offline and give identical bytes twice.
    exporter: Literal["torchscript", "dynamo"] = "torchscript"
    opset: int = Field(18, ge=13, le=23)
    tolerance: float = Field(1e-4, gt=0, description="max |onnxruntime - torch| logit difference allowed")
    check_batches: int = Field(2, ge=1, description="test batches (of 64) compared")
    latency_runs: int = Field(50, ge=5, le=100_000, description="timed batch-1 runs per model")
    throughput_runs: int = Field(10, ge=1, le=100_000, description="timed batch-64 runs per model")
    strict: bool = True  # false: a failed export or check is only recorded (export.json), the stage succeeds


class Pair(_Strict):
    teacher: ModelName
    student: ModelName
    # Per-pair overrides of method_params (e.g. DKD's β per pair, as in mdistiller's configs).
    method_params: dict[MethodName, dict[str, Any]] = Field(default_factory=dict)


class Runtime(_Strict):
    device: str = Field(default="auto", pattern=r"^(auto|cpu|cuda(:\d{1,3})?)$")
    amp: Literal["none", "bf16", "fp16"] = "none"
    # Torch threads per job: CPU results depend on it (reductions split differently), so it is tracked,
    # with a machine-independent default, not "all cores".
    threads: int = Field(default=1, ge=1, le=256)
    deterministic: bool = True
    # Speed-ups that may change float rounding; auto = on for CUDA only, so CPU runs keep their bits
    # (bit-identical speed-ups are always on). docs/performance.md.
    fast_path: Literal["auto", "always", "never"] = "auto"
    # Processes per train_teacher/distill run, through torchrun; batch sizes stay GLOBAL, so N processes
    # give one process's results to float tolerance (docs/distributed.md, also for sync_frozen_bn).
    nproc_per_node: int = Field(default=1, ge=1, le=64)
    sync_frozen_bn: bool = False
    # Streaming loader and indexing workers: results do not depend on them (each sample's randomness
    # comes from the run's generator), so no stage lists them and changing one reruns nothing.
    workers: int = Field(default=4, ge=0, le=64)

    def result_settings(self) -> dict[str, Any]:
        """The settings results may depend on: what a resume state must match (not ``workers``)."""
        return self.model_dump(exclude={"workers"})

    @model_validator(mode="after")
    def _one_device_per_process(self) -> "Runtime":
        if self.nproc_per_node > 1 and self.device.startswith("cuda:"):
            raise ValueError(f"runtime.device: {self.device!r} names one GPU, but runtime.nproc_per_node is "
                             f"{self.nproc_per_node}: use auto or cuda (process i runs on cuda:i)")
        return self


ResourceKey = Literal[("default", *pipeline.STAGES)]  # a stage of the pipeline table (r2kd/pipeline.py)


class Resources(_Strict):
    """Snakemake scheduling hints (threads come from runtime.threads); DVC does not read them."""

    mem_mb: int = Field(default=4000, gt=0)
    runtime: int = Field(default=60, gt=0, description="minutes")
    gpu: int = Field(default=0, ge=0, le=64)
    # How many jobs of this stage may share one GPU on a machine (r2kd.gpu_slots picks the GPU and
    # makes the rest wait): placement only, results do not depend on it. 1: one run per GPU, the
    # fastest per GPU-hour with the CUDA-graph step (docs/performance.md).
    jobs_per_gpu: int = Field(default=1, ge=1, le=64)


class Params(_Strict):
    data: DataConfig = DataConfig()
    teachers: dict[ModelName, TeacherSource] = Field(min_length=1)
    pairs: dict[str, Pair] = Field(min_length=1)
    methods: list[MethodName] = Field(min_length=1)
    augments: list[AugmentName] = Field(default_factory=lambda: [DEFAULT_AUGMENT], min_length=1)
    seeds: list[int]  # each run its own stage
    # Seeds whose runs of a pair train as one stage, a cohort (r2kd/stages/distill_cohort.py): a DAG
    # node of its own in both tools, so a list, which dvc.yaml's matrix can expand (a flag cannot);
    # required, even empty, because dvc.yaml names it.
    cohort_seeds: list[int]
    train_teacher: TeacherRecipe
    prune: PruneConfig = PruneConfig()
    distill: TrainRecipe
    method_params: dict[MethodName, dict[str, Any]] = Field(default_factory=dict)
    evaluate: EvaluateConfig = EvaluateConfig()
    export: ExportConfig = ExportConfig()
    runtime: Runtime = Runtime()
    resources: dict[ResourceKey, Resources] = Field(default_factory=lambda: {"default": Resources()})

    @field_validator("pairs")
    @classmethod
    def _pair_ids(cls, pairs: dict[str, Pair]) -> dict[str, Pair]:
        for key in pairs:
            if not re.match(PAIR_ID, key):
                raise ValueError(f"pair id {key!r} may use only letters, digits, '_' and single '-' (it becomes a path)")
            if len(key) > MAX_ID_LENGTH:
                raise ValueError(f"pair id {_short(key, 40)} is {len(key)} characters; at most {MAX_ID_LENGTH} "
                                 "(it becomes a stage name and part of every run's path)")
        return pairs

    @field_validator("teachers")
    @classmethod
    def _pretrained_weights_exist(cls, teachers: dict[str, TeacherSource]) -> dict[str, TeacherSource]:
        for arch, source in teachers.items():
            if source.pretrained is None:
                continue
            members = PRETRAINED_WEIGHTS.get(arch)
            if members is None:
                raise ValueError(f"teachers.{arch}.pretrained: {arch!r} has no torchvision weights; "
                                 f"only {sorted(PRETRAINED_WEIGHTS)} do (or train it, or import a checkpoint)")
            if source.pretrained not in members:
                raise ValueError(f"teachers.{arch}.pretrained: {source.pretrained!r} is not a torchvision weight "
                                 f"of {arch}; choose one of {list(members)}")
        return teachers

    @field_validator("seeds", "cohort_seeds")
    @classmethod
    def _seed_range(cls, seeds: list[int]) -> list[int]:
        bad = [s for s in seeds if not 0 <= s <= MAX_SEED]
        if bad:
            raise ValueError(f"seeds must be integers in [0, {MAX_SEED}], got {bad}")
        return seeds

    @model_validator(mode="after")
    def _cross_checks(self) -> "Params":
        for key, pair in self.pairs.items():
            if pair.teacher not in self.teachers:
                raise ValueError(f"pairs.{key}.teacher: {pair.teacher!r} is not a key of `teachers` ({sorted(self.teachers)})")
        unused = set(self.teachers) - {p.teacher for p in self.pairs.values()}
        if unused:
            raise ValueError(f"teachers: {sorted(unused)} used by no pair; remove them or add a pair")
        # The same teacher -> student twice is a duplicate unless the method overrides differ (an
        # ablation: presets/ablation.yaml runs R2KD with and without the pruned teacher side by side).
        if len({(p.teacher, p.student, repr(sorted(p.method_params.items()))) for p in self.pairs.values()}) != len(self.pairs):
            raise ValueError("pairs: the same teacher -> student pair is listed twice with the same method_params")
        for key, values in (("methods", self.methods), ("augments", self.augments), ("seeds", self.seeds),
                            ("cohort_seeds", self.cohort_seeds)):
            if len(set(values)) != len(values):
                raise ValueError(f"{key}: duplicate entries in {values}")
        if not self.seeds and not self.cohort_seeds:
            raise ValueError("seeds: empty, and so is cohort_seeds: list at least one seed")
        if both := sorted(set(self.seeds) & set(self.cohort_seeds)):
            raise ValueError(f"cohort_seeds: {both} also in seeds; a seed's runs train either alone or as a cohort")
        if self.cohort_seeds and self.runtime.nproc_per_node > 1:
            raise ValueError(f"cohort_seeds: a cohort trains in one process, but runtime.nproc_per_node is "
                             f"{self.runtime.nproc_per_node}: move the seeds back to `seeds`, or use one process")
        for name in self.methods:
            # DVC tracks `method_params.<name>` per stage, so the entry must exist (even if empty).
            if name not in self.method_params:
                raise ValueError(f"method_params.{name}: missing; add `{name}: {{}}` for the published defaults")
        pretrained = sorted(arch for arch, source in self.teachers.items() if source.pretrained)
        if pretrained and self.data.name not in PRETRAINED_DATASETS:
            raise ValueError(f"teachers.{pretrained[0]}.pretrained: ImageNet weights predict ImageNet's 1000 classes; "
                             f"data.name must be one of {list(PRETRAINED_DATASETS)}, not {self.data.name!r}")
        nproc = self.runtime.nproc_per_node
        for key, size in (("train_teacher", self.train_teacher.batch_size), ("distill", self.distill.batch_size)):
            if size % nproc:  # every process takes an equal shard of the global batch
                raise ValueError(f"{key}.batch_size ({size}) must be a multiple of runtime.nproc_per_node ({nproc})")
        if "default" not in self.resources:
            raise ValueError("resources: a `default` entry is required")
        streamed = self.data.storage == "stream" or self.data.name in STREAM_ONLY_DATASETS
        if streamed and self.evaluate.corruptions:
            raise ValueError(f"evaluate.corruptions: true needs the decoded test split, but data {self.data.name!r} is "
                             "streamed (data.storage); set evaluate.corruptions: false")
        return self

    def method_hparams(self, method: str, augment: str = DEFAULT_AUGMENT, pair: str | None = None) -> MethodParams:
        """The validated hyper-parameters of one run: method_params, the pair's overrides, the augment."""
        raw = dict(self.method_params.get(method, {}))
        where = f"method_params.{method}"
        if pair is not None and method in self.pairs[pair].method_params:
            raw.update(self.pairs[pair].method_params[method])
            where = f"pairs.{pair}.method_params.{method}"
        if augment != DEFAULT_AUGMENT:
            raw["aug_view"] = augment
        return _validate_section(method_params.module(method).PARAMS, raw, where)

    def resources_for(self, stage_group: str) -> Resources:
        return self.resources.get(stage_group, self.resources["default"])


def _validate_section(model: type[BaseModel], raw: Any, where: str, source: str = PARAMS_FILE) -> Any:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, prefix=where, source=source)) from None


# Keys that moved: an old params.yaml gets told where, not just "unknown key".
MOVED_KEYS = {"data.workers": "runtime.workers (results do not depend on it, so it no longer reruns every stage)",
              "runtime.share_teachers": "cohort_seeds (list the seeds whose runs train as one stage per pair)"}


def _format_errors(exc: ValidationError, prefix: str = "", source: str = PARAMS_FILE) -> str:
    lines = [f"invalid parameters in {source}:"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = (f"moved to {MOVED_KEYS[loc]}" if loc in MOVED_KEYS
                   else "unknown key (check the spelling; see params.yaml for the allowed keys)")
        if not err["loc"]:  # a cross-field rule: its message already names the keys
            lines.append(f"  {msg}")
            continue
        shown = "" if err["type"] in ("missing", "extra_forbidden") else f" (got {_short(err.get('input'))})"
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def _short(value: Any, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _warn_ineffective(params: Params) -> None:
    """Settings that validate but cannot do what the user expects: warn, do not refuse."""
    for name, recipe in (("train_teacher", params.train_teacher), ("distill", params.distill),
                         ("prune.finetune", params.prune.finetune)):
        late = [m for m in recipe.milestones if m >= recipe.epochs]
        if recipe.epochs and late:  # prune.finetune.epochs 0: no fine-tune at all
            warnings.warn(f"{name}.milestones {late} are >= {name}.epochs ({recipe.epochs}) and never apply")
    for pair in [None, *params.pairs]:
        if "dkd" in params.methods:
            dkd = params.method_hparams("dkd", pair=pair)
            if dkd.warmup > params.distill.epochs:
                where = "method_params.dkd" if pair is None else f"pairs.{pair}.method_params.dkd"
                share = params.distill.epochs / dkd.warmup
                warnings.warn(f"{where}.warmup ({dkd.warmup}) exceeds distill.epochs ({params.distill.epochs}): "
                              f"the DKD term never exceeds {share:.2f} of its weight")
                break
    if params.prune.ratio > 0.5:
        warnings.warn(f"prune.ratio {params.prune.ratio} removes most of the teacher without retraining; "
                      "expect a near-chance second teacher (the reference uses 0.1)")


def parse_params(raw: Any, source: str = PARAMS_FILE) -> Params:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source} must be a mapping of sections, got {type(raw).__name__}")
    params = _validate_section(Params, raw, "", source)
    for key, pair in params.pairs.items():  # every run's hyper-parameters, now rather than in its stage
        for method in params.methods:
            for augment in params.augments:
                params.method_hparams(method, augment, key)
        unknown = set(pair.method_params) - set(params.methods)
        if unknown:
            warnings.warn(f"pairs.{key}.method_params: {sorted(unknown)} not in `methods`; ignored")
    _warn_ineffective(params)
    return params


@functools.lru_cache(maxsize=None)
def _load_cached(path: str, mtime_ns: int, size: int) -> Params:
    return parse_params(read_yaml(Path(path)), source=path)


def load_params(path: str | Path = PARAMS_FILE) -> Params:
    """Read and validate params.yaml once per process (re-read only if the file changed)."""
    path = Path(path)
    try:
        stat = path.stat()
    except FileNotFoundError:
        raise ConfigError(f"{path} not found; run from the repository root") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    return _load_cached(str(path), stat.st_mtime_ns, stat.st_size)


def section(params: Params, dotted: str) -> Any:
    """A params.yaml value by its dotted key, as plain data (for provenance records)."""
    node: Any = params.model_dump(mode="json")
    for part in dotted.split("."):
        node = node[part]
    return node


def json_schema() -> dict:
    """The schema of params.yaml as JSON Schema (for editors; workflow/schemas/params.schema.json)."""
    return Params.model_json_schema()
