"""The package's shape: imports flow one way, and `--help` never pays for torch."""

import ast
import subprocess
import sys
from pathlib import Path

from conftest import TORCH_FREE_CLI

PACKAGE = Path(__file__).resolve().parents[1] / "nlu_deploy"
# Lower layers first: a file may import only from its own folder and from layers listed before
# it. The shared ground is at the bottom, then what the tasks stand on (data/, runtime/), the
# tasks, and the stages above them. portable/ comes first because it imports nothing of ours.
# fmt: off
LAYERS = ["portable", "task_specs", "errors", "stopping", "config", "artifacts", "reports", "metrics", "progress",
          "data", "runtime", "tasks",
          "evaluation", "training", "export", "predict", "bulk", "serving", "pipeline", "cli_options", "cli", "__main__"]
# fmt: on
# What portable/ may import: it is copied beside Triton's Python models, where only these exist.
PORTABLE_IMPORTS = set(sys.stdlib_module_names) | {"numpy", "tokenizers"}


def unit(path: Path) -> str:
    """The layer a file belongs to: its folder under nlu_deploy/, or its own name at the top."""
    parts = path.relative_to(PACKAGE).parts
    return parts[0] if len(parts) > 1 else path.stem


def imports(path: Path) -> tuple[set[str], set[str]]:
    """The nlu_deploy layers a file imports, and the top-level names of everything else."""
    ours, others = set(), set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("nlu_deploy"):
                ours.update(node.module.split(".")[1:2] or [alias.name for alias in node.names])
            else:
                others.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("nlu_deploy."):
                    ours.add(alias.name.split(".")[1])
                else:
                    others.add(alias.name.split(".")[0])
    return ours - {"__version__"}, others


def package_files() -> list[Path]:
    return [p for p in PACKAGE.rglob("*.py") if p.name != "__init__.py" or p.parent != PACKAGE]


def test_every_folder_and_top_level_module_has_a_layer():
    units = {unit(p) for p in package_files()}
    assert units == set(LAYERS)


def test_imports_flow_one_way_per_folder():
    for path in package_files():
        here = unit(path)
        for imported in imports(path)[0] - {here}:
            assert LAYERS.index(imported) < LAYERS.index(here), (
                f"{path.relative_to(PACKAGE)} ({here}) imports {imported}, which is not below it"
            )


def test_portable_code_needs_only_the_standard_library_numpy_and_tokenizers():
    for path in (PACKAGE / "portable").glob("*.py"):
        ours, others = imports(path)
        assert not ours, f"portable/{path.name} imports nlu_deploy's {ours}: it must run without the package"
        assert others <= PORTABLE_IMPORTS, f"portable/{path.name} imports {others - PORTABLE_IMPORTS}"


def test_module_names_do_not_repeat_across_folders():
    names = [p.stem for p in package_files() if p.name != "__init__.py"]
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


def test_the_task_registry_matches_the_specs():
    from nlu_deploy.task_specs import SPECS
    from nlu_deploy.tasks import TASKS

    assert list(TASKS) == list(SPECS)
    for name, task in TASKS.items():
        assert task.columns == SPECS[name].columns


def test_help_does_not_import_heavy_libraries():
    code = (
        "import sys; from click.testing import CliRunner; from nlu_deploy.cli import main; "
        "CliRunner().invoke(main, ['run', '--help']); "
        "print(sorted(m for m in ('torch', 'transformers', 'onnxruntime', 'optimum') if m in sys.modules))"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_predicting_from_onnx_needs_neither_torch_nor_transformers_nor_onnx(
    monkeypatch, tiny_onnx, tiny_tagger_onnx, tiny_joint_onnx
):
    """A serving box needs onnxruntime, tokenizers and numpy: with torch, transformers, optimum
    and onnx made unimportable, predict still answers for every task, and answers as it does
    with transformers' own tokenizer."""
    from click.testing import CliRunner

    from nlu_deploy import predict
    from nlu_deploy.cli import main
    from nlu_deploy.runtime.modeling import load_tokenizer

    for onnx_dir in (tiny_onnx, tiny_tagger_onnx, tiny_joint_onnx):
        arguments = ["predict", str(onnx_dir), "--json", "wake me up at 7 am", "play some jazz in the kitchen"]
        light = subprocess.run(
            [sys.executable, "-c", TORCH_FREE_CLI, *arguments], capture_output=True, text=True, timeout=60
        )
        assert light.returncode == 0, light.stderr
        monkeypatch.setattr(predict, "inference_tokenizer", lambda directory: load_tokenizer(str(directory)))
        in_process = CliRunner().invoke(main, arguments)
        assert in_process.exit_code == 0, in_process.output
        assert light.stdout.splitlines() == [line for line in in_process.output.splitlines() if line.startswith("{")]


MAX_FUNCTION_LINES = 80  # one screen: a function longer than that holds two ideas (STYLE.md)


def test_no_function_is_longer_than_a_screen():
    long = []
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []
