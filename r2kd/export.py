"""ONNX export of a model, its check against PyTorch, and CPU timing with onnxruntime (docs/robustness.md)."""

from __future__ import annotations

import io
import re
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

INPUT, OUTPUT = "input", "logits"


class ExportFailure(Exception):
    """An export or check that failed; the message names the architecture and, if known, the operator."""


def to_onnx(model: torch.nn.Module, example: torch.Tensor, *, exporter: str, opset: int) -> bytes:
    """The ONNX bytes of ``model`` (batch axis dynamic), from ``torch.onnx.export``."""
    model = model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice, tracer warnings
        if exporter == "torchscript":
            buffer = io.BytesIO()
            torch.onnx.export(model, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT],
                              output_names=[OUTPUT], dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
                              do_constant_folding=True)
            return buffer.getvalue()
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT],
                                    output_names=[OUTPUT], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    verbose=False)
        with tempfile.TemporaryDirectory() as tmp:  # ONNXProgram saves to a path only
            target = Path(tmp) / "model.onnx"
            program.save(str(target))
            return target.read_bytes()


def session(onnx_bytes: bytes, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def max_abs_diff(model: torch.nn.Module, sess, batches: list[torch.Tensor]) -> float:
    """The largest |onnxruntime − PyTorch| logit difference over ``batches``."""
    worst = 0.0
    with torch.no_grad():
        for x in batches:
            expected = model(x).float().numpy()
            got = sess.run([OUTPUT], {INPUT: x.numpy()})[0]
            if got.shape != expected.shape:
                raise ExportFailure(f"onnxruntime output shape {got.shape} != PyTorch {expected.shape}")
            worst = max(worst, float(np.max(np.abs(got - expected))))
    return worst


def latency(sess, example: np.ndarray, runs: int, warmup: int = 5) -> dict[str, float]:
    """Batch-1 latency (ms): p50, p95, mean over ``runs`` timed calls after ``warmup``."""
    x = example[:1]
    for _ in range(warmup):
        sess.run([OUTPUT], {INPUT: x})
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        sess.run([OUTPUT], {INPUT: x})
        times.append((time.perf_counter() - began) * 1000.0)
    p50, p95 = np.percentile(times, [50, 95]).tolist()
    return {"p50_ms": p50, "p95_ms": p95, "mean_ms": statistics.fmean(times), "runs": runs}


def throughput(sess, batch: np.ndarray, runs: int, warmup: int = 2) -> dict[str, float]:
    """Images per second at the batch size of ``batch``."""
    for _ in range(warmup):
        sess.run([OUTPUT], {INPUT: batch})
    began = time.perf_counter()
    for _ in range(runs):
        sess.run([OUTPUT], {INPUT: batch})
    seconds = time.perf_counter() - began
    return {"images_per_s": batch.shape[0] * runs / seconds, "batch": int(batch.shape[0]), "runs": runs}


def describe_failure(arch: str, exc: BaseException) -> str:
    """One line naming the architecture and, when the exporter said which, the operator."""
    text = " ".join(str(exc).split())
    match = re.search(r"(aten::\w+|aten\.\w+(?:\.\w+)?|operator '?[\w:.]+'?|Unsupported: ONNX export of \S+)", text)
    op = f" (operator {match.group(1)})" if match else ""
    return f"{arch}: {type(exc).__name__}{op}: {text[:300]}"
