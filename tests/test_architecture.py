"""The package's shape: imports flow one way, and `--help` never pays for torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nlu_deploy"
# Lower layers first; a module may import only modules listed before it.
LAYERS = ["errors", "config", "artifacts", "reports", "gpu_stack", "spans", "metrics", "data", "tagged_data", "demo", "modeling", "runtime", "tagging", "checkpointing", "distributed", "progress",
          "tasks", "quantize", "train", "validate", "benchmark", "quantize_search", "export", "triton", "training_benchmark", "plots", "predict", "pipeline", "cli", "__main__"]


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nlu_deploy"):
            parts = node.module.split(".")
            names.update(parts[1:2] or [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("nlu_deploy."))
    return names - {"__version__"}


def test_every_module_has_a_layer():
    modules = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert modules | {"tasks"} == set(LAYERS)


def test_tasks_import_only_lower_layers_and_the_registry_matches_the_config():
    from nlu_deploy.config import TASKS as CONFIG_TASKS
    from nlu_deploy.tasks import TASKS

    for path in (PACKAGE / "tasks").glob("*.py"):
        for imported in imported_modules(path) - {"tasks"}:
            assert LAYERS.index(imported) < LAYERS.index("tasks"), f"tasks/{path.name} imports {imported}"
    assert set(TASKS) == set(CONFIG_TASKS)


def test_imports_flow_one_way():
    for module in LAYERS:
        path = PACKAGE / f"{module}.py"
        for imported in imported_modules(path if path.exists() else PACKAGE / module / "__init__.py") - {module}:
            assert LAYERS.index(imported) < LAYERS.index(module), f"{module} imports {imported}"


def test_help_does_not_import_heavy_libraries():
    code = ("import sys; from click.testing import CliRunner; from nlu_deploy.cli import main; "
            "CliRunner().invoke(main, ['run', '--help']); "
            "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'optimum') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
