"""Stage `export`: every teacher, pruned teacher and student to ONNX, checked against PyTorch, timed with
onnxruntime (docs/robustness.md#onnx-export). runs/export/export.json is deterministic; what a clock measured
goes to paths.LATENCY, outside the outputs, so a rerun of export changes no tracked hash."""

from __future__ import annotations

import hashlib
import platform
import time

import torch

from r2kd import paths
from r2kd.config import Params
from r2kd.errors import UserError
from r2kd.files import progress, write_bytes, write_json
from r2kd.recorded import params_record
from r2kd.modelfile import arch_spec, load_model
from r2kd.runs import student_runs
from r2kd.runtime import seed_everything, set_threads
from r2kd.stages.dataset import load_data

CHECK_BATCH, THROUGHPUT_BATCH = 64, 64


def models(params: Params) -> list[dict]:
    """Every model file the pipeline makes, with what identifies it in the report."""
    out = []
    for arch in params.teachers:
        out.append({"kind": "teacher", "arch": arch, "path": paths.teacher_dir(arch) / "model.pt"})
        out.append({"kind": "pruned_teacher", "arch": arch, "path": paths.pruned_dir(arch) / "model.pt"})
    for r in student_runs(params):
        out.append({"kind": "student", "arch": r.student, "path": r.dir / "model.pt", "pair": r.pair,
                    "teacher": r.teacher, "method": r.method, "augment": r.augment, "seed": r.seed})
    return out


def run(params: Params) -> None:
    cfg = params.export
    if not cfg.onnx:
        write_json(paths.EXPORT_RECORD, {"enabled": False, "models": [], "failures": [],
                                         "params": params_record(params, "export")})
        write_json(paths.LATENCY, {"enabled": False, "models": []})
        return
    from r2kd.export import ExportFailure, describe_failure, latency, max_abs_diff, session, throughput, to_onnx

    set_threads(params.runtime.threads)
    seed_everything(0, params.runtime.deterministic)
    data = load_data(CHECK_BATCH, torch.device("cpu"), generator=None, workers=params.runtime.workers)
    check = [x for _, (x, _) in zip(range(cfg.check_batches), data.test)]
    example = check[0][:2].contiguous()
    bench = torch.cat(check)[:THROUGHPUT_BATCH]
    if bench.shape[0] < THROUGHPUT_BATCH:  # a tiny test split: repeat it to fill the batch
        bench = bench.repeat((THROUGHPUT_BATCH + bench.shape[0] - 1) // bench.shape[0], 1, 1, 1)[:THROUGHPUT_BATCH]
    bench = bench.numpy()
    records, timings, failures = [], [], []
    items = models(params)
    for item in progress(items, len(items), f"export: {len(items)} models to ONNX, checked and timed"):
        ident = {k: (str(v) if k == "path" else v) for k, v in item.items()}
        onnx_path = paths.export_file(item["path"])
        try:
            model = load_model(item["path"], arch_spec(item["arch"], data.meta))
            began = time.perf_counter()
            try:
                blob = to_onnx(model, example, exporter=cfg.exporter, opset=cfg.opset)
            except Exception as exc:  # the exporters raise many types; record, go on with the others
                raise ExportFailure(describe_failure(item["arch"], exc)) from exc
            export_s = time.perf_counter() - began
            sess = session(blob, params.runtime.threads)
            diff = max_abs_diff(model, sess, check)
            if not diff <= cfg.tolerance:
                raise ExportFailure(f"{item['arch']}: onnxruntime logits differ from PyTorch by {diff:.3g} "
                                    f"> export.tolerance {cfg.tolerance:g} on the first {len(check)} test batches")
        except ExportFailure as exc:
            failures.append({**ident, "error": str(exc)})
            print(f"export: FAILED {item['path']}: {exc}")
            continue
        write_bytes(onnx_path, blob)
        records.append({**ident, "onnx": str(onnx_path), "sha256": hashlib.sha256(blob).hexdigest(),
                        "bytes": len(blob), "check": f"max |diff| <= {cfg.tolerance:g}: passed"})
        timings.append({**ident, "onnx": str(onnx_path), "bytes": len(blob), "max_abs_diff": diff,
                        "export_s": export_s, "latency_batch1": latency(sess, bench, cfg.latency_runs),
                        "throughput": throughput(sess, bench, cfg.throughput_runs)})
        print(f"export: {onnx_path} ({len(blob):,} B, max |diff| {diff:.2e}, "
              f"p50 {timings[-1]['latency_batch1']['p50_ms']:.3f} ms)")
    import onnx
    import onnxruntime

    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    write_json(paths.EXPORT_RECORD, {"enabled": True, "exporter": cfg.exporter, "opset": cfg.opset,
                                     "tolerance": cfg.tolerance, "check_batches": cfg.check_batches,
                                     "models": records, "failures": failures,
                                     "params": params_record(params, "export")})
    write_json(paths.LATENCY, {"enabled": True, "note": "wall-clock measurements: differ on every run",
                               "machine": {"platform": platform.platform(), "processor": platform.processor(),
                                           "threads": params.runtime.threads, **versions},
                               "models": timings})
    if failures and cfg.strict:
        raise UserError(f"export: {len(failures)} of {len(failures) + len(records)} model(s) failed "
                        "(recorded in runs/export/export.json; export.strict: false records without failing): "
                        + "; ".join(f["error"] for f in failures))
