"""Write docs/commands.md from the CLI's own --help, so the command reference never drifts from
the code. `python docs/make_commands.py --check` exits 1 when the committed page is stale
(tests/test_docs.py runs it, so CI fails on a stale page).

    python docs/make_commands.py          # rewrite docs/commands.md
    python docs/make_commands.py --check  # compare only
"""

import argparse
import sys
from pathlib import Path

from click.testing import CliRunner

from nlu_deploy.cli import main

PAGE = Path(__file__).resolve().parent / "commands.md"
WIDTH = 100  # fixed, so the page does not depend on the terminal that wrote it


def help_text(*command: str) -> str:
    result = CliRunner().invoke(main, [*command, "--help"], prog_name="nlu-deploy", terminal_width=WIDTH)
    if result.exit_code != 0:
        raise SystemExit(f"nlu-deploy {' '.join(command)} --help failed: {result.output}")
    return result.output.rstrip() + "\n"


def page() -> str:
    parts = [
        "# Command reference\n",
        "Generated from `nlu-deploy COMMAND --help` by `docs/make_commands.py`; do not edit by hand.\n",
        "```text\n" + help_text() + "```\n",
    ]
    for name in sorted(main.commands):
        parts.append(f"## nlu-deploy {name}\n\n```text\n{help_text(name)}```\n")
    return "\n".join(parts)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="Exit 1 if docs/commands.md is not what --help says.")
    args = parser.parse_args()
    text = page()
    if args.check:
        if not PAGE.exists() or PAGE.read_text(encoding="utf-8") != text:
            sys.exit(f"{PAGE} is stale: run `python docs/make_commands.py` and commit it.")
        return
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    run()
