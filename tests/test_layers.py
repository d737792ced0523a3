"""Layers point one way, bottom to top: the shared layer (stampcheck/'s own modules), the engine that runs a
model, the stages in pipeline order, the app that drives them. A module imports its own layer and those
below it, never one above."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# (package, folder), bottom first. A module's layer is the longest package its name starts with.
LAYERS = [
    ("stampcheck", "stampcheck"),  # shared: files, images, the dataset contract, formats
    ("stampcheck.engine", "stampcheck/engine"),  # running a model: torch and ONNX back-ends, decoding
    ("stampcheck.crawler", "crawler"),
    ("stampcheck.compose", "compose"),
    ("stampcheck.train", "train"),
    ("stampcheck.qa", "qa"),
    ("stampcheck.app", "stampcheck/app"),  # the CLI, the demo, the Python API
]
# A package's front door faces the user: `python -m stampcheck` and ``from stampcheck import Detector``.
ENTRY = {"stampcheck.__main__", "stampcheck"}


def imports(path: Path, ours: set[str]) -> set[str]:
    """Every module a file imports, at the top or inside a function (``from a import b`` imports a.b when
    that is a module of ours)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in ours else node.module
                      for a in node.names}
    return found


def layer(module: str) -> int | None:
    """The index in LAYERS of a module of ours (the app's for the front door), None for another's."""
    if module in ENTRY:
        return len(LAYERS) - 1
    owners = [i for i, (package, _) in enumerate(LAYERS) if module == package or module.startswith(package + ".")]
    return max(owners, key=lambda i: len(LAYERS[i][0])) if owners else None


def modules():
    for package, folder in LAYERS:
        for path in sorted((ROOT / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            yield name, path


def test_layers_point_one_way():
    wrong = []
    ours = {module for module, _ in modules()}
    for module, path in modules():
        for imported in imports(path, ours):
            theirs = layer(imported)
            if theirs is not None and imported not in ENTRY and theirs > layer(module):
                wrong.append(f"{module} imports {imported}")
            if imported in ENTRY - {"stampcheck"} or (imported == "stampcheck" and module not in ENTRY):
                wrong.append(f"{module} imports the front door {imported}")
    assert not wrong, wrong


def test_every_module_has_a_layer():
    """A new folder of code is given its place, not left out of the rule."""
    packages = {p.parent for p in ROOT.rglob("__init__.py") if ".git" not in p.parts and "tests" not in p.parts
                and "bench" not in p.parts and "egg-info" not in str(p)}
    assert packages == {ROOT / folder for _, folder in LAYERS}, packages


def test_the_rule_catches_a_shared_module_importing_a_stage():
    assert layer("stampcheck.compose.looks") > layer("stampcheck.images")
    assert layer("stampcheck.qa.batch") > layer("stampcheck.train.learner") > layer("stampcheck.engine.onnx")
    assert layer("stampcheck.app.cli") > layer("stampcheck.qa") and layer("numpy") is None
