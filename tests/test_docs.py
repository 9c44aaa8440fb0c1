"""README.md and docs/: a front door of at most 250 lines whose commands run as written (the cheap ones
are run here; for the others every flag must be one the program has), links that resolve, test names
that exist, and nothing a reader of the repository cannot open."""
import glob
import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")
DOCS = sorted(glob.glob(os.path.join(ROOT, "docs", "*.md")))
PROGRAMS = ("train.py", "predict.py", "reproduce.py", "adapt.py", "bench.py", "rotation_study.py",
            "exercises.py", "data.py", "synthetic.py")


def _text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def _commands(path):
    """Every `python X.py ...` line of the file's bash blocks, as argv lists (comments dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", _text(path), flags=re.S)
    lines = [line.split("  #")[0].strip() for block in blocks
             for line in block.replace("\\\n", " ").splitlines()]
    return [line.split()[1:] for line in lines
            if line.startswith("python ") and line.split()[1].endswith(".py")]


def _run(argv, cwd):
    return subprocess.run([sys.executable, *argv], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_readme_is_a_front_door():
    text = _text(README)
    assert len(text.splitlines()) <= 250
    first = text.splitlines()[:7]
    assert first[2:7] == ["```bash", "pip install -r requirements.txt",
                          "python train.py --arch unetr2d --size mini", "python -m pytest -q", "```"]
    for heading in ("## The files, in reading order", "## Thesis to code", "## A student", "## A biologist",
                    "## A researcher", "## An instructor"):
        assert heading in text, heading
    listed = set(re.findall(r"^\| `([a-z_0-9]+\.py)`", text, flags=re.M))
    rows = re.findall(r"^\| `[a-z_0-9]+\.py`((?:, `[a-z_0-9]+\.py`)+) \|", text, flags=re.M)
    listed |= {name for names in rows for name in re.findall(r"`([a-z_0-9]+\.py)`", names)}
    on_disk = {os.path.basename(p) for p in glob.glob(os.path.join(ROOT, "*.py"))}
    assert on_disk == listed, on_disk ^ listed  # every top-level file has its line


def _help(program, sub=None):
    """What `python PROGRAM [SUB] --help` prints, from the program's own parser, in this process."""
    import contextlib
    import importlib
    import io

    module = importlib.import_module(program[:-3])
    entry = module.parse_args if hasattr(module, "parse_args") else module.main
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_info:
        entry([sub, "--help"] if sub else ["--help"])
    assert exit_info.value.code == 0, program
    return out.getvalue()


def test_every_documented_flag_is_one_its_program_has():
    seen = 0
    for path in [README, *DOCS]:
        for argv in _commands(path):
            program = os.path.basename(argv[0])
            assert program in PROGRAMS and os.path.isfile(os.path.join(ROOT, program)), (path, argv)
            if program in ("data.py", "synthetic.py"):
                continue  # no flags: one folder each
            sub = (argv[1] if program == "exercises.py" and len(argv) > 1 and not argv[1].startswith("-")
                   else None)
            text = _help(program, sub)
            for flag in (a.split("=")[0] for a in argv[1:] if a.startswith("--")):
                assert flag in text, f"{os.path.basename(path)}: {' '.join(argv)}: {flag}"
                seen += 1
    assert seen > 30


def test_the_cheap_readme_commands_run_as_written(tmp_path):
    commands = [argv for argv in _commands(README)
                if "--summary" in argv or argv[:2] == ["exercises.py", "list"]]
    assert commands, "the README shows --summary and exercises.py list"
    for argv in commands:
        done = _run([os.path.join(ROOT, argv[0]), *argv[1:]], str(tmp_path))
        assert done.returncode == 0, (argv, done.stderr)
    summary = _run([os.path.join(ROOT, "train.py"), "--arch", "unetr2d", "--size", "base", "--summary"], ROOT)
    assert "48,665,377" in summary.stdout and "48,665,377" in _text(README)  # the number quoted beside it
    written = _run([os.path.join(ROOT, "synthetic.py"), "demo-data"], str(tmp_path))
    assert written.returncode == 0, written.stderr
    report = _run([os.path.join(ROOT, "data.py"), "demo-data"], str(tmp_path))
    assert report.returncode == 0 and report.stdout.strip().endswith("each paired with its own mask"), report


def test_links_resolve_and_docs_name_only_what_the_repository_holds():
    for path in [README, *DOCS]:
        text = _text(path)
        for target in re.findall(r"\]\(([^)#]+)\)", text):
            if not target.startswith("http"):
                assert os.path.exists(os.path.join(os.path.dirname(path), target)), (path, target)
        assert "SPEC" not in text and "shared/" not in text, path
    for path in glob.glob(os.path.join(ROOT, "*.py")):
        text = _text(path)
        assert "SPEC" not in text and "shared/" not in text, path


def test_test_names_in_the_thesis_map_exist():
    tests = "".join(_text(p) for p in glob.glob(os.path.join(ROOT, "tests", "test_*.py")))
    names = set(re.findall(r"`(test_[A-Za-z0-9_]+)`", _text(os.path.join(ROOT, "docs", "thesis-map.md"))))
    assert len(names) > 40
    missing = sorted(n for n in names if f"def {n}(" not in tests)
    assert not missing, missing


MEASURED = ("speed.md", "reproducing.md", "domain-adaptation.md", "rotation-study.md", "data.md",
            "segmenting.md", "teaching.md")


def test_measured_numbers_carry_a_commit_and_a_date_that_exist():
    """A measured number carries the commit, date and machine it was measured on, so a stale one shows."""
    stamps = set()
    for name in MEASURED:
        text = _text(os.path.join(ROOT, "docs", name))
        found = re.findall(r"`([0-9a-f]{7})`", text)
        assert found and re.search(r"20\d\d-\d\d-\d\d", text) and "CPU" in text, name
        stamps |= set(found)
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=ROOT, capture_output=True, text=True)
    if top.returncode != 0 or os.path.realpath(top.stdout.strip()) != os.path.realpath(ROOT):
        pytest.skip("not a git checkout of the project")
    for commit in sorted(stamps):  # a commit that landed, not one of a branch elsewhere
        known = subprocess.run(["git", "cat-file", "-e", f"{commit}^{{commit}}"], cwd=ROOT,
                               capture_output=True)
        assert known.returncode == 0, f"docs cite commit {commit}, which this repository does not hold"
