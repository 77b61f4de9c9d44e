"""Imports point down: cli → (api | bridge | broker | devices) → config → core, checked by the
import-linter contracts in pyproject.toml, so an upward or sideways import fails the suite; and the
lower layers stay light (the core loads no MQTT or web framework, the API no MQTT library)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "api", "bridge", "broker", "devices", "config", "core")
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the packages under `root`, not an installed copy
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"], cwd=root, env=env, capture_output=True, text=True, timeout=120
    )


def test_the_import_contracts_hold():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


FORBIDDEN = {  # module: an import it must not make
    "core/metrics.py": "api.metrics",  # the core reaching up
    "core/domain.py": "config.settings",  # the core reading settings
    "devices/printer.py": "cli.main",  # a device agent reaching up
    "api/metrics.py": "broker.stats",  # sideways between parts
    "bridge/relay.py": "devices.printer",  # sideways between parts
}


def test_an_upward_or_sideways_import_breaks_a_contract(tmp_path: Path):
    """The contracts can fail: the same check on a copy of the code with forbidden imports added,
    each of which must be reported."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for module, imported in FORBIDDEN.items():
        with (tmp_path / module).open("a") as source:
            source.write(f"\nimport {imported}  # forbidden\n")
    result = lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    for module, imported in FORBIDDEN.items():
        importer = module.removesuffix(".py").replace("/", ".")
        assert f"{importer} -> {imported}" in result.stdout, (importer, imported, result.stdout)


LOADS = """
import importlib, json, sys
loaded = {}
for module in sys.argv[1:]:  # in order, in one interpreter: each adds what it loads to what came before
    importlib.import_module(module)
    loaded[module] = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps(loaded))
"""


def test_the_core_loads_no_mqtt_library_or_web_framework_and_the_api_no_mqtt_library():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-c", LOADS, "core.services.orders", "api.main"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    loaded = {module: set(packages) for module, packages in json.loads(result.stdout).items()}
    assert not loaded["core.services.orders"] & {"amqtt", "paho", "aiomqtt", "fastapi", "starlette"}
    assert not loaded["api.main"] & {"amqtt", "paho", "aiomqtt", "broker", "bridge"}


def test_scripts_do_not_import_the_tests():
    """Benchmarks run without the test suite; what both need lives in scripts/ or below."""
    for script in sorted((ROOT / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(), str(script))):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            assert not [name for name in names if name.split(".")[0] == "tests"], f"{script.name} imports {names}"
