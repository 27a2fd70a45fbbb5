"""The shell commands of README.md and docs/quickstart.md run as written.

Every line (or `&&` part of a line) of a ```bash block in those two files that starts with `convlab ` is
a documented command. Each one is either run here, through `convlab.cli.main`, with the placeholders
(RUN_DIR, `runs/digits-small-cnn-...`, image names, `--data-dir DIR`) replaced by small stand-ins this
file makes, or listed in SKIPPED with the reason it cannot run in a test. A command added to those
documents that is neither fails `test_every_documented_command_is_known`, so the docs cannot drift from
the command line unnoticed.
"""
from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from convlab.cli import main
from convlab.data.idx import write_idx
from convlab.layout import CONFIG, LABELS, METRICS, PREPROCESS, WEIGHTS

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", ROOT / "docs" / "quickstart.md"]

# Commands that are run: the fast ones against a 1-epoch stand-in run ...
RUN_FAST = {
    "convlab eval runs/digits-small-cnn-...",
    "convlab predict runs/digits-small-cnn-... my_digit.png --json",
    "convlab train --config runs/digits-small-cnn-.../config.yaml --seed 1 --out runs/again",
    "convlab eval RUN_DIR",
    "convlab eval RUN_DIR --data imagefolder:other_photos",
    "convlab predict RUN_DIR photo.jpg folder_of_images/ --top-k 3",
    "convlab predict RUN_DIR photo.jpg --json",
}
# ... and the quick start's `convlab train`, exactly as written (the default digits recipe, ~10 s).
RUN_SLOW = {"convlab train"}
# Commands that cannot run offline or in a test, with the reason. None of the two documents has one
# today; a download (`--data mnist` without --data-dir, torchvision or timm weights) belongs here.
SKIPPED: dict[str, str] = {}

RUN_PLACEHOLDERS = ("runs/digits-small-cnn-...", "RUN_DIR")


# -- reading the documents ----------------------------------------------------------------------------
def bash_blocks(text: str) -> list[str]:
    """The contents of the ```bash fenced blocks of a Markdown text."""
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M)


def block_lines(block: str) -> list[str]:
    """The block's commands, one per line: continuation lines joined, blank lines dropped."""
    joined = re.sub(r"\\\n\s*", " ", block)
    return [line.strip() for line in joined.splitlines() if line.strip()]


def convlab_commands(line: str) -> list[str]:
    """The `convlab ...` parts of one shell line (split at &&), comments dropped, spaced one way."""
    tokens = shlex.split(line, comments=True)
    parts, current = [], []
    for token in tokens + ["&&"]:
        if token == "&&":
            parts.append(current)
            current = []
        else:
            current.append(token)
    return [shlex.join(part) for part in parts if part and part[0] == "convlab"]


def documented_commands() -> set[str]:
    found = set()
    for doc in DOCS:
        for block in bash_blocks(doc.read_text(encoding="utf-8")):
            for line in block_lines(block):
                found.update(convlab_commands(line))
    return found


def readme_quick_start() -> list[str]:
    """The command lines of the bash block under README's '## Quick start'."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = re.search(r"^## Quick start\n(.*?)(?=^## )", text, flags=re.S | re.M)
    assert section, "README.md has no '## Quick start' section"
    blocks = bash_blocks(section.group(1))
    assert len(blocks) == 1, f"README's quick start should have one bash block, found {len(blocks)}"
    return block_lines(blocks[0])


# -- the stand-ins ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stand_in_run(tmp_path_factory) -> Path:
    """A digits run trained for 1 epoch through the command line: what RUN_DIR stands for."""
    out = tmp_path_factory.mktemp("docs") / "digits-run"
    assert main(["train", "--model", "tiny-cnn", "--epochs", "1", "--quiet", "--out", str(out)]) == 0
    return out


def write_digit(path: Path, value: int = 0) -> None:
    """An 8x8 grayscale 'digit' image (any image works: predict resizes and converts it)."""
    pixels = np.zeros((8, 8), np.uint8)
    pixels[1:7, 3 + value % 2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, mode="L").save(path)


def write_fake_mnist(folder: Path, train: int = 60, test: int = 20) -> Path:
    """The four MNIST IDX files, with random images, under the names convlab's mnist loader reads."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 10).astype(np.uint8))
    return folder


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """The current folder of a documented command, holding the files its text names."""
    monkeypatch.chdir(tmp_path)
    write_digit(tmp_path / "my_digit.png")
    Image.open(tmp_path / "my_digit.png").convert("RGB").save(tmp_path / "photo.jpg")
    for i in range(2):
        write_digit(tmp_path / "folder_of_images" / f"img{i}.png", i)
    for label in ("3", "7"):  # classes the digits run knows
        for i in range(5):
            write_digit(tmp_path / "other_photos" / label / f"{label}-{i}.png", int(label) + i)
    return tmp_path


def substitute(command: str, run_dir: Path, data_dir: Path) -> list[str]:
    """The argv for convlab.cli.main: the leading 'convlab' dropped, placeholders replaced."""
    argv = shlex.split(command)[1:]
    out = []
    for i, token in enumerate(argv):
        for placeholder in RUN_PLACEHOLDERS:
            if token == placeholder or token.startswith(placeholder + "/"):
                token = str(run_dir) + token[len(placeholder):]
                break
        if token == "DIR" and i and argv[i - 1] == "--data-dir":
            token = str(data_dir)
        out.append(token)
    return out


def image_count(paths: list[str]) -> int:
    return sum(len(list(Path(p).iterdir())) if Path(p).is_dir() else 1 for p in paths)


def check_result(argv: list[str], workdir: Path, stdout: str) -> None:
    """Beyond exit code 0: what the command must have produced."""
    command = argv[0]
    if command == "train":
        out = Path(argv[argv.index("--out") + 1])
        out = out if out.is_absolute() else workdir / out
        for name in (WEIGHTS, CONFIG, LABELS, PREPROCESS, METRICS):
            assert (out / name).is_file(), f"{name} missing from {out}"
    elif command == "predict":
        paths = [a for a in argv[2:] if not a.startswith("--") and not a.isdigit()]
        if "--json" in argv:
            results = json.loads(stdout)
            assert len(results) == image_count(paths)
            assert all(r["top"] and r["top"][0]["label"] in [str(d) for d in range(10)] for r in results)
        else:
            assert len(stdout.strip().splitlines()) == image_count(paths)
    elif command == "eval":
        assert "accuracy" in stdout


# -- the tests ----------------------------------------------------------------------------------------
def test_readme_quick_start_has_two_commands():
    lines = readme_quick_start()
    assert len(lines) == 2, f"README's quick start should have exactly two commands, found {lines}"
    assert [c for line in lines for c in convlab_commands(line)] == ["convlab train"]


def test_every_documented_command_is_known():
    found = documented_commands()
    assert not (RUN_FAST & RUN_SLOW) and not ((RUN_FAST | RUN_SLOW) & set(SKIPPED))
    unknown = found - RUN_FAST - RUN_SLOW - set(SKIPPED)
    assert not unknown, f"documented commands neither run here nor listed in SKIPPED: {sorted(unknown)}"
    gone = (RUN_FAST | RUN_SLOW | set(SKIPPED)) - found
    assert not gone, f"commands listed here that the docs no longer show: {sorted(gone)}"


def test_command_extraction():
    """The parser finds `&&` parts, joins continuations and drops comments, and ignores other tools."""
    text = ("```bash\npip install -e . && convlab train\nconvlab eval RUN_DIR   # a comment\n"
            "convlab predict RUN_DIR \\\n    a.png\ntorchrun -m convlab train\n```\n```text\nconvlab models\n```\n")
    found = {c for block in bash_blocks(text) for line in block_lines(block) for c in convlab_commands(line)}
    assert found == {"convlab train", "convlab eval RUN_DIR", "convlab predict RUN_DIR a.png"}


@pytest.mark.parametrize("command", sorted(RUN_FAST))
def test_documented_command_runs(command, stand_in_run, workdir, tmp_path_factory, capsys):
    data_dir = write_fake_mnist(tmp_path_factory.mktemp("mnist"))
    argv = substitute(command, stand_in_run, data_dir)
    assert not any(p in token for token in argv for p in RUN_PLACEHOLDERS)
    capsys.readouterr()
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, f"{command!r} (as {argv}) exited {code}: {captured.err[-2000:]}"
    check_result(argv, workdir, captured.out)


@pytest.mark.slow
@pytest.mark.parametrize("command", sorted(RUN_SLOW))
def test_quick_start_train_runs_as_written(command, tmp_path, monkeypatch):
    """README's `convlab train`, the default digits recipe, with only --out added (into tmp_path)."""
    monkeypatch.chdir(tmp_path)
    argv = shlex.split(command)[1:] + ["--out", str(tmp_path / "run")]
    assert main(argv) == 0
    for name in (WEIGHTS, CONFIG, LABELS, PREPROCESS, METRICS):
        assert (tmp_path / "run" / name).is_file(), f"{name} missing"
    metrics = json.loads((tmp_path / "run" / METRICS).read_text())
    assert metrics["epochs_run"] == 20 and metrics["accuracy"] > 0.9  # the recipe's 20 epochs, as documented
    assert not (tmp_path / "runs").exists()


# -- install commands ---------------------------------------------------------------------------------
# A package named `convlab` on the public index is another project: every install of this one names the
# project folder (`pip install -e .`, `pip install -e ".[serve]"`), never the bare name.
INSTALL_TEXTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "src").rglob("*.py"))]


def pip_install_targets(text: str) -> list[list[str]]:
    """The arguments of each `pip install` in a text (Markdown or a message in Python source)."""
    found = []
    for args in re.findall(r"pip install ([^`\n#|()&<]*)", text):
        args = args.split(" in the ")[0].replace('\\"', '"').strip().rstrip(",;:")
        found.append([token for token in shlex.split(args) if not token.startswith("-")])
    return found


def test_pip_install_targets_are_read_from_markdown_and_messages():
    text = 'run `pip install -e ".[serve]"` or: pip install -e \\".[tune]\\" in the convlab folder (or pip install x)'
    assert pip_install_targets(text) == [[".[serve]"], [".[tune]"], ["x"]]
    assert pip_install_targets('pip install "convlab[serve]"  # FastAPI') == [["convlab[serve]"]]


@pytest.mark.parametrize("path", INSTALL_TEXTS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_pip_install_installs_this_project_from_its_folder(path):
    import tomllib

    extras = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    for targets in pip_install_targets(path.read_text()):
        assert targets, f"{path.name}: a pip install without a target"
        for target in targets:
            name = re.split(r"[\[@<>=!~;\s]", target)[0]
            assert name.lower() != "convlab", f"{path.name}: pip install {target} installs another project"
            if target.startswith("."):
                match = re.fullmatch(r"\.(?:\[([\w,]+)\])?", target)
                assert match, f"{path.name}: pip install {target}: write . or .[EXTRA]"
                assert set(filter(None, (match.group(1) or "").split(","))) <= extras, f"{path.name}: {target}"


def test_the_readme_installs_from_the_project_folder():
    assert [".[test]"] in pip_install_targets((ROOT / "README.md").read_text())


# -- printed config samples ---------------------------------------------------------------------------
MARKS = "ʳᶠ*ˢ"


def config_samples() -> list[tuple[str, list[str]]]:
    """Each `config  (...)` printout quoted in README.md and docs/*.md: (file name, its section lines)."""
    samples = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for match in re.finditer(r"^config  \(.*\)\n((?:  \w+ .*\n)+)", path.read_text(), flags=re.M):
            samples.append((path.name, match.group(1).splitlines()))
    return samples


def test_the_docs_quote_config_samples():
    assert {name for name, _ in config_samples()} >= {"quickstart.md", "fine-tuning.md"}


@pytest.mark.parametrize("name, lines", config_samples(), ids=[name for name, _ in config_samples()])
def test_every_config_sample_lists_every_key_as_the_config_prints_it(name, lines):
    """Every section line names its section's keys in the config's order, and an unmarked value (a default)
    is written as `convlab train` prints that default."""
    import io

    from rich.console import Console

    from convlab import config as cfg
    from convlab.pipeline import print_config

    sections = [line.split()[0] for line in lines]
    out = io.StringIO()
    print_config(Console(file=out, width=10_000), cfg.Config(), {key: "default" for key in cfg.FLAT_KEYS},
                 tuple(sections))
    defaults = dict(part.split("=", 1) for line in out.getvalue().splitlines()[1:] for part in line.split()[1:])
    for line in lines:
        section, *parts = line.split()
        keys = [part.split("=", 1)[0] for part in parts]
        assert keys == [key for key, (s, _) in cfg.FLAT_KEYS.items() if s == section], f"{name}: {section}"
        for key, value in (part.split("=", 1) for part in parts):
            if value[-1] not in MARKS:
                assert value == defaults[key], f"{name}: {section} {key}={value} is not the default"
