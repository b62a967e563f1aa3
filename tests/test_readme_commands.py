"""Every command the README shows is checked against the code, so that documentation cannot drift.

Each shell line of the README's `bash` blocks is matched to the entry point it runs. That entry point parses the
command exactly as a user's shell would hand it over, and recipe commands also load their recipe with the same
overrides (an unknown or misspelled key is a RecipeError there). A line that matches no known entry point fails
the test: a new kind of command needs a checker here. What each command then does is proven by the test named in
`RUNS_FOR_REAL`, on tiny data.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path
from unittest import mock

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = sorted((REPO_ROOT / "docs").glob("*.md"))
"""docs/ holds what the README links to (experiment logs, full results): its commands are checked the same way."""

# Where each kind of command is executed on tiny data (for the reader of this file; checked to exist below).
RUNS_FOR_REAL = {
    "train_ocr finetune": "tests/test_train_ocr.py::test_finetune_writes_model_processor_recipe_curves_and_checkpoints",
    "train_ocr evaluate": "tests/test_train_ocr.py::test_evaluate_json_schema_and_values",
    "train_ocr read": "tests/test_train_ocr.py::test_read_prints_text_and_confidence_matching_generate",
    "train_ocr pretrain": "tests/test_pretrain_loop.py",
    "modeling_dig.convert_original_checkpoint": "tests/test_dig_converter.py",
    "modeling_clip4str.convert_original_checkpoint": "tests/test_clip4str_converter.py",
    "benchmarks": "tests/test_benchmark_smoke.py",
    "benchmarks.data_scale": "tests/test_data_scale_benchmark.py",
    "benchmarks.onnx_accuracy": "tests/test_data_scale_benchmark.py::test_onnx_accuracy_compares_pytorch_fp32_and_int8_on_one_split",
    "train_ocr export": "tests/test_onnx_export.py",
    "train_ocr quickstart --config": "tests/test_train_ocr.py::test_quickstart_runs_the_models_recipe_or_the_one_named_by_config",
    "train_ocr finetune model.charset": "tests/test_charset_end_to_end.py",
    "processing.synthetic --charset": "tests/test_charsets.py::test_rendered_labels_stay_inside_the_charset_and_use_its_alphabet",
    "benchmarks.charset_adaptation": "tests/test_charsets.py::test_the_charset_adaptation_benchmark_runs_both_arms_and_scores_them",
}


def readme_commands(path: Path = README) -> list[str]:
    """The shell lines of a Markdown file's ```bash blocks, without comments."""
    commands, in_bash = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            in_bash = line.strip() == "```bash"
            continue
        if in_bash:
            command = line.split(" #", 1)[0].strip()
            if command and not command.startswith("#"):
                commands.append(command)
    return commands


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def parse_only(main, argv: list[str]) -> argparse.Namespace:
    """Run `main(argv)` up to its argument parsing and return the namespace; argparse's own error (exit 2) fails."""
    original = argparse.ArgumentParser.parse_args

    def capture(self, args=None, namespace=None):
        raise _Parsed(original(self, args, namespace))

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture):
        try:
            main(argv)
        except _Parsed as parsed:
            return parsed.namespace
    raise AssertionError(f"{argv}: main() returned without parsing its arguments")


def check_train_ocr(argv: list[str]) -> None:
    import train_ocr
    from scene_text_training.recipes import load_recipe

    args = parse_only(train_ocr.main, argv)
    if args.command in ("finetune", "pretrain", "evaluate"):  # one recipe schema for all three
        load_recipe(train_ocr.resolve_config(args.config), args.overrides)
    elif args.command == "quickstart" and args.config is not None:  # another recipe through the quickstart job
        load_recipe(train_ocr.resolve_config(args.config), args.overrides)


def check_python_module(argv: list[str]) -> None:
    assert argv[0] == "-m", f"python {argv}: only `python -m MODULE` commands are documented"
    module = importlib.import_module(argv[1])
    parse_only(module.main, argv[2:])


def check_script(path: str, argv: list[str]) -> None:
    script = REPO_ROOT / path
    assert script.is_file(), f"{path} does not exist"
    if path == "scripts/quickstart.sh":  # hands its arguments to `train_ocr quickstart`
        check_train_ocr(["quickstart", *argv])
    elif path == "scripts/run_tests.sh":
        text = script.read_text()
        options = [a for a in argv if a.startswith("--")]
        for option in options:
            assert f"{option})" in text, f"{path} has no option {option}"
        if "--env" in argv:  # setup_env.sh's `case` lists the environments it builds
            env = argv[argv.index("--env") + 1]
            cases = re.findall(r"^\s*([a-z|]+)\)$", (REPO_ROOT / "scripts/setup_env.sh").read_text(), re.MULTILINE)
            assert env in "|".join(cases).split("|"), f"{path} --env {env}: setup_env.sh builds {cases}"
        for target in (a for a in argv if a.startswith("tests/")):
            assert (REPO_ROOT / target.split("::")[0]).exists(), target
    else:
        assert not argv, f"{path} takes no arguments"


def check(command: str) -> None:
    words = shlex.split(command)
    program, argv = words[0], words[1:]
    if program.endswith("train_ocr"):
        check_train_ocr(argv)
    elif program.endswith(("/python", "python")):
        check_python_module(argv)
    elif program == "bash":
        check_script(argv[0], argv[1:])
    elif program == ".tools/bin/uv":
        # uv's own commands: `uv lock --upgrade` refreshes uv.lock, `uv export` writes requirements-lock.txt
        assert argv[:1] in (["lock"], ["export"]), command
        assert (REPO_ROOT / "uv.lock").is_file()
    else:
        raise AssertionError(f"README command {command!r} has no checker in tests/test_readme_commands.py")


COMMANDS = readme_commands()
DOC_COMMANDS = [(path.name, command) for path in DOCS for command in readme_commands(path)]


def test_readme_shows_commands():
    assert len(COMMANDS) >= 15 and COMMANDS[:2] == ["bash scripts/quickstart.sh", "bash scripts/run_tests.sh"]


@pytest.mark.parametrize("command", COMMANDS)
def test_readme_command_matches_the_code(command):
    check(command)


@pytest.mark.parametrize(("doc", "command"), DOC_COMMANDS)
def test_docs_command_matches_the_code(doc, command):
    check(command)


def test_readme_links_to_docs_that_exist():
    linked = set(re.findall(r"\]\((docs/[^)]+\.md)\)", README.read_text()))
    assert linked, "the README links its docs/ pages"
    for target in linked:
        assert (REPO_ROOT / target).is_file(), target
    assert {f"docs/{path.name}" for path in DOCS} <= linked, "every docs/ page is linked from the README"


def test_misspelled_recipe_key_is_caught():
    """The check above catches the bug it exists for: a pre-training command with a key the recipe does not have
    (the flat `train_data` of the pre-training schema before it became the fine-tuning one, `data.train`)."""
    from scene_text_training.recipes import RecipeError

    with pytest.raises(RecipeError):
        check(".venv/bin/train_ocr pretrain --config dig_small_pretrain train_data=[/data/unlabeled]")
    with pytest.raises(SystemExit):
        check(".venv/bin/train_ocr evaluate --modle outputs/dig")


def test_tests_named_for_the_real_runs_exist():
    for target in RUNS_FOR_REAL.values():
        path, _, name = target.partition("::")
        text = (REPO_ROOT / path).read_text()
        assert not name or f"def {name}(" in text, target


def test_tests_the_readme_cites_exist():
    """The README names the test that proves each guarantee; a renamed or deleted test must not leave it pointing
    at nothing."""
    text = "\n".join(path.read_text() for path in (README, *DOCS))
    cited = sorted(set(re.findall(r"tests/[a-z_0-9]+\.py(?:::[A-Za-z_0-9]+)?", text)))
    assert len(cited) >= 10
    for target in cited:
        path, _, name = target.partition("::")
        assert (REPO_ROOT / path).is_file(), target
        assert not name or f"def {name}(" in (REPO_ROOT / path).read_text(), target
