"""The package's shape: imports flow one way, and `--help` never pays for torch."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "nlu_deploy"
# Lower layers first; a module may import only modules listed before it.
LAYERS = ["errors", "config", "artifacts", "reports", "plots", "gpu_stack", "spans", "tag_decoding", "rejection", "metrics", "data", "tagged_data", "demo", "modeling", "light_tokenizer", "runtime", "tagging", "checkpointing", "weight_averaging", "distributed", "progress", "batching",
          "tasks", "oos", "quantize", "train", "search", "distill", "validate", "benchmark", "quantize_search", "export", "triton", "triton_local", "training_benchmark", "predict", "pipeline", "cli", "__main__"]


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


def test_predicting_from_onnx_needs_neither_torch_nor_transformers_nor_onnx(monkeypatch, tiny_onnx, tiny_tagger_onnx,
                                                                           tiny_joint_onnx):
    """A serving box needs onnxruntime, tokenizers and numpy: with torch, transformers, optimum
    and onnx made unimportable, predict still answers for every task, and answers as it does
    with transformers' own tokenizer."""
    from click.testing import CliRunner

    from nlu_deploy import predict
    from nlu_deploy.cli import main
    from nlu_deploy.modeling import load_tokenizer

    blocker = ("import sys\n"
               "class Block:\n"
               "    def find_spec(self, name, path=None, target=None):\n"
               "        if name.split('.')[0] in ('torch', 'transformers', 'optimum', 'onnx'):\n"
               "            raise ImportError(name + ' is blocked')\n"
               "sys.meta_path.insert(0, Block())\n"
               "from nlu_deploy.cli import main\n"
               "main()\n")
    for onnx_dir in (tiny_onnx, tiny_tagger_onnx, tiny_joint_onnx):
        arguments = ["predict", str(onnx_dir), "--json", "wake me up at 7 am", "play some jazz in the kitchen"]
        light = subprocess.run([sys.executable, "-c", blocker, *arguments], capture_output=True, text=True, timeout=60)
        assert light.returncode == 0, light.stderr
        monkeypatch.setattr(predict, "inference_tokenizer", lambda directory: load_tokenizer(str(directory)))
        in_process = CliRunner().invoke(main, arguments)
        assert in_process.exit_code == 0, in_process.output
        assert light.stdout.splitlines() == [line for line in in_process.output.splitlines() if line.startswith("{")]
