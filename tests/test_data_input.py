"""The user's data is an input of `prepare` in both tools (issue: results never silently describe
old data). DVC hashes `${data.root}` (re-hashing only files whose size or mtime changed); Snakemake's
rule reads an index of the same files' paths, sizes and mtimes (workflow/rules/common.smk). Each
change below must show in `dvc status` and `snakemake -n` before anything runs, and the rerun of
`prepare` must describe the new data."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import make_repo, run
from test_stream import make_tree, write_jpeg

pytestmark = pytest.mark.slow


def planned(repo) -> bool:
    plan = run(["snakemake", "-n", "--cores", "1", "data/prepared/meta.json"], repo).stdout
    return "rule prepare:" in plan


def stale(repo) -> bool:
    return "prepare" in run(["dvc", "status", "prepare"], repo).stdout


@pytest.mark.parametrize("storage", ["memory", "stream"])
def test_changed_added_or_removed_images_rerun_prepare_in_both_tools(tmp_path, storage):
    repo = make_repo(tmp_path / "repo", override={"data": {"name": "imagefolder", "root": "data/raw/shapes",
                                                           "image_size": 8, "storage": storage,
                                                           "train_limit": None, "test_limit": None},
                                                  "evaluate": {"corruptions": storage == "memory"}})
    tree = make_tree(repo / "data/raw/shapes", {"a": 3, "b": 3})
    run(["dvc", "repro", "prepare"], repo)
    assert not stale(repo) and not planned(repo)
    rng = np.random.default_rng(1)

    def rerun_sees(change) -> str:
        before = (repo / "data/prepared/meta.json").read_text()
        change()
        assert stale(repo), "dvc status missed the change"
        assert planned(repo), "snakemake -n missed the change"
        run(["dvc", "repro", "prepare"], repo)
        assert not stale(repo)
        after = (repo / "data/prepared/meta.json").read_text()
        assert after != before
        return after

    # one class's images replaced (same names, other pixels)
    rerun_sees(lambda: [write_jpeg(p, rng, 40, 40) for p in sorted((tree / "train" / "a").iterdir())])
    # a class added
    meta = json.loads(rerun_sees(lambda: make_tree(tree, {"c": 3}, seed=2)))
    assert meta["class_names"] == ["a", "b", "c"] and meta["counts"]["train"] == 9
    # one image added to a class
    added = tree / "train" / "b" / "b_new.JPEG"
    meta = json.loads(rerun_sees(lambda: write_jpeg(added, rng, 41, 39)))
    assert meta["class_counts"]["train"] == [3, 4, 3]
    # and removed again
    assert json.loads(rerun_sees(lambda: added.unlink()))["counts"]["train"] == 9
    shutil.rmtree(tree / "train" / "c")
    shutil.rmtree(tree / "val" / "c")
    assert stale(repo) and planned(repo)
