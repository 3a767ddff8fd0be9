"""r2kd.recorded: the params a result records, looked up by the dotted keys of dvc.yaml."""

from __future__ import annotations

import json

from r2kd.recorded import UNRECORDED, made_with, recorded_value

RECORD = {
    "data": {"name": "digits", "split_seed": 0},
    "method_params.kd": {"temperature": 4.0},
    "pairs.a-b": {"teacher": "a", "student": "b", "method_params": {}},
    "runtime": {"device": "auto", "threads": 1, "amp": "none"},
}


def test_a_key_is_found_under_its_longest_recorded_prefix():
    assert recorded_value(RECORD, "data") == {"name": "digits", "split_seed": 0}
    assert recorded_value(RECORD, "data.split_seed") == 0
    assert recorded_value(RECORD, "runtime.threads") == 1
    assert recorded_value(RECORD, "method_params.kd") == {"temperature": 4.0}
    assert recorded_value(RECORD, "method_params.kd.temperature") == 4.0
    assert recorded_value(RECORD, "pairs.a-b.teacher") == "a"
    assert recorded_value(RECORD, "method_params.dkd") is UNRECORDED
    assert recorded_value(RECORD, "runtime.workers") is UNRECORDED
    assert recorded_value(RECORD, "distill") is UNRECORDED
    assert recorded_value(RECORD, "data.name.x") is UNRECORDED  # below a leaf


def test_made_with_says_yes_no_or_cannot_tell(tmp_path):
    record = tmp_path / "provenance.json"
    record.write_text(json.dumps({"seed": 0, "params": RECORD}))
    assert made_with(record, {"runtime.threads": 1, "method_params.kd": {"temperature": 4.0}}) is True
    assert made_with(record, {"runtime.threads": 2, "method_params.kd": {"temperature": 4.0}}) is False
    assert made_with(record, {"method_params.kd": {"temperature": 2.0}}) is False
    assert made_with(record, {"data": {"name": "digits"}}) is False  # a section is compared whole
    assert made_with(record, {"runtime.threads": 1, "runtime.workers": 4}) is None  # not recorded
    assert made_with(tmp_path / "missing.json", {"runtime.threads": 1}) is None
    record.write_text('{"params": ')  # cut short
    assert made_with(record, {"runtime.threads": 1}) is None
    record.write_text(json.dumps({"seed": 0}))
    assert made_with(record, {"runtime.threads": 1}) is None
    record.write_text(json.dumps([1, 2]))
    assert made_with(record, {"runtime.threads": 1}) is None
