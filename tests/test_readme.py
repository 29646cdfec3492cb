"""The README's commands run as written.

A fenced block's info string says what this test does with it (GitHub reads only the first word, the language, so
the marks do not show):

    ```bash runnable      run with `bash -e -o pipefail`, in order with the other runnable blocks
    ```python runnable    run with this interpreter, reading the code from stdin (so `import lwpose` is the checkout's)
    ```json file=NAME     written to NAME before the blocks that follow it run
    ```bash slow          too slow for the suite (training, long validations): not run, but it must parse, and every
                          `--flag` given to a repository script must be one its --help lists (as must the flags in
                          every bash block of docs/)

They run in a temporary checkout, a folder of links to the repository's files with `shared` linked beside it, so
that `../shared/...` and `weights/...` mean what they mean in a clone and nothing is written into the repository.
"""
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from conftest import HPE_XML, MMPOSE_SAMPLES, REPO_ROOT, SHARED, SHARED_DATA, require_shared

README = os.path.join(REPO_ROOT, "README.md")
# What the README's commands use from the repository; what they write (weights/, runs/, out.mp4) stays in the copy.
CHECKOUT_ENTRIES = ("lwpose", "modules", "datasets", "scripts", "docs", "train.py", "val.py", "demo.py",
                    "pyproject.toml", "Makefile", "README.md", "LICENSE")
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
BLOCK_SECONDS = 120
SUBCOMMAND_SCRIPTS = ("scripts/benchmark.py",)


@dataclass
class Block:
    language: str
    marks: tuple[str, ...]
    code: str
    path: str
    line: int  # of the opening fence, for messages

    @property
    def file(self) -> str | None:
        return next((m[len("file="):] for m in self.marks if m.startswith("file=")), None)

    def where(self) -> str:
        return f"{os.path.relpath(self.path, REPO_ROOT)} line {self.line} ({self.language} {' '.join(self.marks)})"


def fenced_blocks(path: str) -> list[Block]:
    text = open(path, encoding="utf-8").read()
    blocks = []
    for match in FENCE.finditer(text):
        words = match.group(1).split()
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(words[0] if words else "", tuple(words[1:]), match.group(2), path, line))
    return blocks


def commands(code: str) -> list[list[str]]:
    """The shell words of each command line (continuations joined, comments dropped)."""
    joined = code.replace("\\\n", " ")
    result = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words:
            result.append(words)
    return result


def script_flags(words: list[str]) -> dict[str, list[str]]:
    """The repository script a command runs (`python train.py ...`, `torchrun ... train.py ...`) and the flags given
    to it; a subcommand (`scripts/benchmark.py decode ...`) is part of the script's name here."""
    for i, word in enumerate(words):
        if re.fullmatch(r"(scripts/)?\w+\.py", word) and os.path.isfile(os.path.join(REPO_ROOT, word)):
            rest = words[i + 1:]
            if word in SUBCOMMAND_SCRIPTS and rest and not rest[0].startswith("-"):
                word, rest = f"{word} {rest[0]}", rest[1:]
            return {word: [w.split("=")[0] for w in rest if w.startswith("--")]}
    return {}


@pytest.fixture(scope="module")
def blocks() -> list[Block]:
    return fenced_blocks(README)


def test_the_readme_stays_short_and_marks_its_commands(blocks):
    assert len(open(README, encoding="utf-8").read().splitlines()) <= 200
    runnable = [b for b in blocks if "runnable" in b.marks]
    assert {b.language for b in runnable} == {"bash", "python"}
    # The weights import comes first, so that every later block finds weights/hpe0001.pth.
    assert "scripts/import_weights.py" in runnable[0].code
    assert all(b.language in ("bash", "python") for b in blocks if "runnable" in b.marks or "slow" in b.marks)


@pytest.fixture(scope="module")
def checkout(tmp_path_factory) -> str:
    require_shared(HPE_XML, os.path.join(MMPOSE_SAMPLES, "coco", "test_coco.json"),
                   os.path.join(SHARED_DATA, "video", "vtest.avi"))
    root = tmp_path_factory.mktemp("readme")
    os.symlink(os.path.abspath(SHARED), root / "shared")
    repo = root / "lwpose"
    repo.mkdir()
    for name in CHECKOUT_ENTRIES:
        if os.path.exists(os.path.join(REPO_ROOT, name)):
            os.symlink(os.path.join(REPO_ROOT, name), repo / name)
    # `python` in the README is this interpreter (a wrapper, not a link: a link would lose its virtual environment).
    bin_dir = root / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (bin_dir / "python").chmod(0o755)
    return str(repo)


def run_environment(checkout: str) -> dict:
    env = dict(os.environ)
    env["PATH"] = os.path.join(os.path.dirname(checkout), "bin") + os.pathsep + env.get("PATH", "")
    return env


def test_the_readme_runnable_blocks_run_as_written(blocks, checkout):
    env = run_environment(checkout)
    ran = 0
    for block in blocks:
        if block.file:
            with open(os.path.join(checkout, block.file), "w", encoding="utf-8") as f:
                f.write(block.code)
            continue
        if "runnable" not in block.marks:
            continue
        if block.language == "bash":
            command, stdin = ["bash", "-e", "-o", "pipefail", "-c", block.code], None
        else:
            command, stdin = ["python", "-"], block.code
        result = subprocess.run(command, cwd=checkout, env=env, input=stdin, capture_output=True, text=True,
                                timeout=BLOCK_SECONDS)
        assert result.returncode == 0, (f"{block.where()} failed (exit {result.returncode}):\n{block.code}\n"
                                        f"--- stdout\n{result.stdout[-3000:]}\n--- stderr\n{result.stderr[-3000:]}")
        ran += 1
    assert ran >= 4
    # What the blocks say they make is there.
    for made in ("weights/hpe0001.pth", "people.jpg", "out.mp4", "poses.jsonl", "runs/upper_body.json"):
        assert os.path.getsize(os.path.join(checkout, made)) > 0, made
    with open(os.path.join(checkout, "poses.jsonl")) as f:
        assert len(f.readlines()) == 100


def script_help_flags(scripts) -> dict[str, set[str]]:
    """Every flag each script's --help lists (the scripts start in parallel: train.py alone imports torch)."""
    def flags(script: str) -> set[str]:
        result = subprocess.run([sys.executable, *script.split(), "--help"], cwd=REPO_ROOT, capture_output=True,
                                text=True, timeout=BLOCK_SECONDS)
        assert result.returncode == 0, f"{script} --help: {result.stderr[-2000:]}"
        return set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", result.stdout))

    scripts = sorted(scripts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(scripts, pool.map(flags, scripts)))


def flags_given(blocks: list[Block]) -> dict[str, set[str]]:
    """The flags the bash blocks give each repository script; each block must also parse as bash."""
    given: dict[str, set[str]] = {}
    for block in blocks:
        syntax = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True)
        assert syntax.returncode == 0, f"{block.where()}: {syntax.stderr}"
        for words in commands(block.code):
            for script, flags in script_flags(words).items():
                given.setdefault(script, set()).update(flags)
    return given


def test_the_readme_and_docs_give_scripts_only_flags_they_have(blocks):
    """The slow blocks are not run, and docs/ shows commands in pieces (`train.py ... --resume`): every flag they
    give a script must still be one it has."""
    checked = [b for b in blocks if b.language == "bash" and {"runnable", "slow"} & set(b.marks)]
    docs = os.path.join(REPO_ROOT, "docs")
    for name in sorted(os.listdir(docs)):
        if name.endswith(".md"):
            checked += [b for b in fenced_blocks(os.path.join(docs, name)) if b.language == "bash"]
    given = flags_given(checked)
    assert {"train.py", "val.py", "demo.py"} <= set(given)
    known = script_help_flags(given)
    unknown = {script: sorted(flags - known[script]) for script, flags in given.items()}
    assert {script: flags for script, flags in unknown.items() if flags} == {}
