"""Layers point one way: the shared layer (stampcheck/, but for the commands that drive the stages)
imports no stage, and a stage imports no later one (crawl -> compose -> train -> qa)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ["crawler", "compose", "train", "qa"]
APP = {"stampcheck.cli", "stampcheck.demo", "stampcheck.api", "stampcheck.__main__"}  # drive the stages


def imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def allowed(module: str) -> set[str]:
    package = module.split(".")[0]
    if package == "stampcheck":
        return set(STAGES) | {"stampcheck"} if module in APP else {"stampcheck"}
    return {"stampcheck", *STAGES[:STAGES.index(package) + 1]}


def test_layers_point_one_way():
    wrong = []
    for package in ["stampcheck", *STAGES]:
        for path in sorted((ROOT / package).glob("*.py")):
            module = f"{package}.{path.stem}"
            for imported in imports(path):
                top = imported.split(".")[0]
                if top in {"stampcheck", *STAGES} and top not in allowed(module):
                    wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


def test_the_rule_catches_a_shared_module_importing_a_stage():
    assert "compose" not in allowed("stampcheck.images")
    assert "qa" not in allowed("train.learner") and "compose" in allowed("train.learner")
