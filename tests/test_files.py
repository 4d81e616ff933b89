"""Atomic writes: the target holds the old or the new content, never a partial one."""

import json

import pytest

from lifelong.tracking.files import atomic_path, write_json_atomic


def test_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "result.json"
    write_json_atomic({"v": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text('{"v": 2, "trunc')
        raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]
    write_json_atomic({"v": 2}, target)
    assert json.loads(target.read_text()) == {"v": 2}
