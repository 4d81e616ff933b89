"""The README's Python examples run as written."""

import re
from pathlib import Path


def test_readme_python_examples_run(tmp_path, monkeypatch):
    text = (Path(__file__).parent.parent / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    from lifelong.strategies import STRATEGIES

    assert "weight-avg" in STRATEGIES
    assert 0.0 <= namespace["result"]["final_accuracy"] <= 1.0
