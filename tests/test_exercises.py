"""exercises.py and course/: the records list what a student needs and docs/teaching.md shows what
`list --markdown` prints; `make` blanks the chosen bodies by `ast`, keeps every other byte, copies
figures/ and docs/ but not the kit's own tests, and ships the course files of the copy's exercises
only, without references or hidden checks; every check fails on the blank copy and passes on the
project; a solved copy passes its own checks against the recorded answers, for its own exercises
only; the copy's tests run per exercise; every mistake of the command line is one line and exit 2."""
import ast
import difflib
import glob
import json
import os
import re
import subprocess
import sys

import pytest

import exercises
import grader
from exercise_kit import EVERY, KIT, ROOT, fill

pytestmark = pytest.mark.skipif(os.path.exists(os.path.join(ROOT, exercises.MARKER)),
                                reason="a student copy: its exercises are blank on purpose")
LINE = re.compile(r"^(PASS|FAIL) exercise (\d+): (.*) \[(\d+) pts?(, hidden)?\](?: -- (.*))?$", re.M)
TOTAL = re.compile(r"^exercise (\d+): (\d+)/(\d+) points \((\d+)/(\d+) checks pass\)$", re.M)


def run(args, cwd, **kw):
    return subprocess.Popen([sys.executable, *args], cwd=cwd, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


def qualnames(tree):
    """{'Class.method' or 'function': node} for every def at module or class level, nested ones too."""
    found = {}

    def walk(nodes, prefix):
        for node in nodes:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                found[prefix + node.name] = node
                walk(node.body, prefix + node.name + ".")
    walk(tree.body, "")
    return found


@pytest.fixture(scope="module")
def blank_copy(tmp_path_factory):
    return exercises.make(str(tmp_path_factory.mktemp("kit") / "course"), EVERY, root=ROOT)


def test_list_shows_objective_minutes_task_hints_and_thesis_questions(capsys):
    exercises.main(["list"])
    out = capsys.readouterr().out
    for e in KIT.exercises.values():
        head = rf"^ ?{e.number}\. {re.escape(e.title)}  \[.*\]  {e.minutes} min, \d+ points"
        assert re.search(head, out, re.M), e.number
        for path, name in e.targets:
            assert f"{path}: {name}" in out
        assert 5 <= e.minutes <= 60 and len(e.hints) == 2 and 1 <= len(e.questions) <= 2
        assert all(re.search(r"§|Table|Fig\.|Eq\.|App\.", q) for q in e.questions), e.number
    assert out.count("Objective: ") == out.count("Task: ") == out.count("Hint: ") == len(EVERY)
    exercises.main(["hint", "3"])
    hint = " ".join(capsys.readouterr().out.split())
    assert " ".join(KIT.exercises[3].hints[1].split()) in hint


def test_selections_fit_a_two_hour_lab_and_the_whole_course():
    minutes = {name: sum(KIT.exercises[n].minutes for n in numbers)
               for name, numbers in exercises.selections().items()}
    assert 90 <= minutes["lab"] <= 120 and list(exercises.selections()["course"]) == EVERY
    assert exercises.parse_numbers("lab", "--only") == sorted(exercises.LAB)


def test_docs_hold_what_list_markdown_prints(capsys):
    exercises.main(["list", "--markdown"])
    printed = capsys.readouterr().out.strip()
    with open(os.path.join(ROOT, "docs", "teaching.md"), encoding="utf-8") as f:
        docs = f.read()
    block = re.search(r"<!-- python exercises.py list --markdown -->\n(.*?)\n<!-- end -->", docs, re.S)
    assert block and block.group(1).strip() == printed


def changed_spans():
    """{path: {qualname: message start}} of what a copy made for every exercise blanks or withholds."""
    spans = {}
    for e in KIT.exercises.values():
        for path, name in e.targets:
            spans.setdefault(path, {})[name] = f'NotImplementedError("exercise {e.number}: '
        for path, name in e.withheld:
            spans.setdefault(path, {}).setdefault(name, f'NotImplementedError("{exercises.WITHHELD}: ')
    return spans


def test_make_changes_only_the_chosen_bodies_and_ships_no_solution(blank_copy):
    spans = changed_spans()
    files = exercises.project_files(ROOT)
    assert {"tests/test_attention.py", ".ci/run", "docs/teaching.md", "course/judging.py"} <= set(files)
    assert set(KIT.files.values()) <= set(files)
    assert any(f.startswith("figures/") and f.endswith(".png") for f in files)
    assert not any(f.startswith(("runs/", ".git/", "tests/exercise_", "tests/test_exercise")) for f in files)
    assert sorted(exercises.project_files(blank_copy)) == sorted(files)
    for rel in files:
        with open(os.path.join(ROOT, rel), "rb") as f:
            before = f.read()
        with open(os.path.join(blank_copy, rel), "rb") as f:
            after = f.read()
        if rel in KIT.files.values():
            assert after.decode() == exercises.student_view(before.decode()), rel
        elif rel not in spans:
            assert after == before, rel
        else:
            check_blanked(rel, before.decode(), after.decode(), spans[rel])
    marker = json.load(open(os.path.join(blank_copy, exercises.MARKER)))
    assert marker["exercises"] == EVERY and os.path.isfile(os.path.join(blank_copy, exercises.ANSWERS))
    assert marker["hidden"] == {str(n): [sum(c.hidden for c in cs), sum(c.points for c in cs if c.hidden)]
                                for n, cs in KIT.checks.items()}


def test_a_copy_ships_the_course_files_of_its_own_exercises_only(tmp_path):
    copy = exercises.make(str(tmp_path / "three"), [3, 9], root=ROOT)
    shipped = sorted(os.listdir(os.path.join(copy, grader.COURSE)))
    assert shipped == sorted(["judging.py", os.path.basename(KIT.files[3]), os.path.basename(KIT.files[9])])
    tests = os.listdir(os.path.join(copy, "tests"))
    assert not any("test_exercise" in n or n.startswith("exercise_") for n in tests)
    mine = grader.load_kit(copy)
    assert list(mine.exercises) == [3, 9] and all(not c.hidden for cs in mine.checks.values() for c in cs)


def check_blanked(rel, old, new, names):
    old_defs, new_defs = qualnames(ast.parse(old)), qualnames(ast.parse(new))
    inside = {d for d in old_defs if any(d.startswith(name + ".") for name in names)}  # nested in them
    assert set(old_defs) - inside == set(new_defs), rel
    old_lines, new_lines = old.split("\n"), new.split("\n")
    spans = []
    for name, message in names.items():
        func = new_defs[name]
        assert len(func.body) <= 2 and isinstance(func.body[-1], ast.Raise), f"{rel}: {name}"
        assert message in new_lines[func.body[-1].lineno - 1], (rel, name)
        first, last = exercises.body_span(old_defs[name], old_lines)
        spans.append((first, last))
        new_first = exercises.body_span(func, new_lines)[0]  # the signature and docstring stay
        head = old_lines[old_defs[name].lineno - 1:first - 1]
        assert head == new_lines[func.lineno - 1:new_first - 1], name
    enclosing = {name.rsplit(".", 1)[0] for name in names if "." in name}
    for name, node in old_defs.items():
        if name not in names and name not in enclosing and name not in inside:  # the others, byte for byte
            assert ast.get_source_segment(old, node) == ast.get_source_segment(new, new_defs[name]), name
    changes = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes()
    for tag, i1, i2, _, _ in changes:
        assert tag == "equal" or any(first - 1 <= i1 and i2 <= last for first, last in spans), (rel, i1, i2)


def test_the_copy_kit_has_no_references_and_no_hidden_checks(blank_copy):
    hidden = {c.fn.__name__ for cs in KIT.checks.values() for c in cs if c.hidden}
    seen_hidden = seen_references = 0
    for n, rel in KIT.files.items():
        with open(os.path.join(ROOT, rel)) as f:
            source = f.read()
        with open(os.path.join(blank_copy, rel)) as f:
            view = f.read()
        old, new = qualnames(ast.parse(source)), qualnames(ast.parse(view))
        references = {name for name, node in old.items()
                      if exercises.decorated(node, "reference") is not None}
        inside = {name for name in old if name.split(".")[0] in references and "." in name}
        assert set(new) == set(old) - hidden - inside, rel
        view_lines, source_lines = view.split("\n"), source.split("\n")
        for name, node in new.items():
            if name in references:
                assert len(node.body) <= 2 and isinstance(node.body[-1], ast.Raise), name
            else:
                assert view_lines[node.lineno - 1:node.end_lineno] == \
                    source_lines[old[name].lineno - 1:old[name].end_lineno], name
        assert exercises.student_view(view) == view  # the child applies it again
        seen_hidden += len(set(old) & hidden)
        seen_references += len(references)
    assert seen_hidden >= len(EVERY) and seen_references >= len(EVERY)
    copied = grader.load_kit(blank_copy)
    assert {n: [c.behaviour for c in cs] for n, cs in copied.checks.items()} == \
        {n: [c.behaviour for c in cs if not c.hidden] for n, cs in KIT.checks.items()}


def test_blank_source_edge_cases():
    source = ("class A:\n    def f(self):\r\n        '''Doc.'''\r\n        return 1\r\n"
              "def g(x):\n    return 0\n"
              "def g(x):\n    # a comment that gives the answer away\n    y = x\n    return y\n"
              "def k():\n    '''Only a docstring.'''\n"
              "def h(a,\n      b):  # end\n    return a\n\n\n# tail\nZ = 1")
    targets = [("A.f", "exercise 1: f"), ("g", "exercise 2: g"), ("k", "exercise 3: k"),
               ("h", "exercise 4: h")]
    out = exercises.blank_source(source, targets)
    assert "def g(x):\n    return 0\n" in out  # the first g is dead code: Python keeps the later one
    assert not re.search("return [1ya]|the answer", out) and out.endswith("# tail\nZ = 1")
    assert "    def f(self):\r\n        '''Doc.'''\r\n" \
        "        raise NotImplementedError(\"exercise 1: f\")\r\n" in out
    assert "def h(a,\n      b):  # end\n    raise NotImplementedError(\"exercise 4: h\")\n" in out
    namespace = {}
    exec(compile(out, "<blanked>", "exec"), namespace)
    for call, message in [(lambda: namespace["A"]().f(), "exercise 1: f"),
                          (lambda: namespace["g"](1), "exercise 2: g"),
                          (lambda: namespace["k"](), "exercise 3: k"),
                          (lambda: namespace["h"](1, 2), "exercise 4: h")]:
        with pytest.raises(NotImplementedError, match=message):
            call()
    with pytest.raises(exercises.cli.UsageError, match="no function A.missing"):
        exercises.blank_source(source, [("A.missing", "x")])


def outcome(out):
    return [(m[0], int(m[1]), m[2], int(m[3]), bool(m[4]), m[5]) for m in LINE.findall(out)], \
        {int(m[0]): tuple(map(int, m[1:])) for m in TOTAL.findall(out)}


def test_blanked_copy_fails_every_check_and_the_project_passes(blank_copy, tmp_path):
    """And a lab copy, solved but for one wrong IoU, grades only its own exercises against its answers."""
    lab = exercises.make(str(tmp_path / "lab"), exercises.parse_numbers("lab", "--only"), root=ROOT)
    for n in exercises.LAB:  # the project's own bodies back in, but one wrong IoU
        wrong = {"iou_from_counts": "return 1.0 if tp + fp == 0 else tp / (tp + fp + fn)"}
        fill(lab, n, wrong if n == 9 else {})
    jobs = [run(["exercises.py", "check"], blank_copy), run(["exercises.py", "check", "all"], lab)]
    project = grader.grade_folder(ROOT, EVERY)
    (blank, _), (solved, err) = (job.communicate(timeout=600) for job in jobs)
    assert [job.returncode for job in jobs] == [1, 1], err
    assert all(r.passed for r in project) and len(project) == sum(map(len, KIT.checks.values()))
    lines, totals = outcome(blank)
    public = {n: [c for c in cs if not c.hidden] for n, cs in KIT.checks.items()}
    assert len(lines) == sum(map(len, public.values())) and not any(hidden for *_, hidden, _ in lines)
    assert all(p == "FAIL" and msg.startswith(f"not written yet: exercise {n}: ")
               for p, n, _, _, _, msg in lines)
    assert {n: t[0] for n, t in totals.items()} == {n: 0 for n in EVERY}
    nine = [c for c in KIT.checks[9] if c.hidden]
    count, points = len(nine), sum(c.points for c in nine)
    assert f"HIDDEN exercise 9: {count} more check{'s' * (count > 1)} ({points} point{'s' * (points > 1)}) " \
           "run when your instructor grades" in blank
    lines, totals = outcome(solved)
    lab = sorted(exercises.LAB)
    assert sorted(totals) == lab and len(lines) == sum(len(public[n]) for n in lab)
    failed = [(n, behaviour, msg) for p, n, behaviour, _, _, msg in lines if p == "FAIL"]
    edges = next(c for c in public[9] if c.fn.__name__ == "scores_edges")
    assert failed == [(9, edges.behaviour, "IoU_F on counts (TP, FP, FN) = (0, 0, 7): 1, expected 0 "
                                           "(allowed 1e-06)")], solved
    points = {hidden: sum(c.points for n in lab for c in KIT.checks[n] if c.hidden == hidden)
              for hidden in (False, True)}
    assert f"total: {points[False] - edges.points}/{points[False]} points" in solved, solved
    assert f"(plus {points[True]} points in hidden checks)" in solved


def test_a_copy_with_every_exercise_blank_still_builds_its_models(blank_copy):
    code = "import unetr2d, ynetr2d, unet; m = unetr2d.UNETR2D('mini'); ynetr2d.YNETR2D('mini'); " \
           "unet.AttentionUNet(); print(sum(p.numel() for p in m.parameters()))"
    out, err = run(["-c", code], blank_copy).communicate(timeout=120)
    assert out.strip() == "4243553", err


def markers_of(path):
    """{test name: {exercise numbers}} from the @pytest.mark.exN in place in one test file (a module's
    pytestmark counts for each of its tests, a pytest.param's marks for its test)."""
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    def numbers(node):
        return {int(m) for m in re.findall(r"pytest\.mark\.ex(\d+)\b", ast.unparse(node))}
    module = set().union(*[numbers(n) for n in tree.body if isinstance(n, ast.Assign)
                           and any(getattr(t, "id", "") == "pytestmark" for t in n.targets)] or [set()])
    return {n.name: module | set().union(*[numbers(d) for d in n.decorator_list] or [set()])
            for n in tree.body if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")}


def test_the_copys_own_tests_run_per_exercise_and_skip_the_blank_ones(tmp_path):
    copy = exercises.make(str(tmp_path / "three"), [3], root=ROOT)
    args = ["-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider", "-m", "ex3 or ex4", "tests/test_vit.py"]
    out, _ = run(args, copy).communicate(timeout=300)
    outcomes = {name.split("::")[1].split("[")[0]: result
                for name, result in re.findall(r"^(tests/\S+) (PASSED|SKIPPED|FAILED|ERROR)", out, re.M)}
    marks = markers_of("tests/test_vit.py")
    three = {t for t, ns in marks.items() if 3 in ns}
    assert three and set(outcomes) == {t for t, ns in marks.items() if ns & {3, 4}}, out
    assert all(outcomes[t] == "SKIPPED" for t in three), out  # exercise 3 is blank
    assert set(outcomes.values()) == {"PASSED", "SKIPPED"}, out
    skips = re.findall(r"^SKIPPED \[\d+\] .*", out, re.M)
    assert skips and all("blank exercise 3: Patch embedding" in line or "reference withheld from this copy: "
                         "it would solve exercise 3" in line for line in skips), out


def test_the_projects_tests_carry_their_exercise_markers_in_place():
    seen = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "tests", "test_*.py"))):
        for test, numbers in markers_of(os.path.relpath(path, ROOT)).items():
            for n in numbers:
                seen.setdefault(n, []).append(test)
    assert sorted(seen) == EVERY, sorted(seen)  # every exercise marks some tests, and no other marker is used
    with open(os.path.join(ROOT, "tests", "conftest.py")) as f:
        conftest = f.read()
    assert f"EXERCISES = {len(EVERY)}" in conftest
    assert not re.search(r"import (grader|exercises|judging)", conftest)


def test_make_check_and_grade_refuse_bad_input_with_one_line(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    (tmp_path / "class" / "alice").mkdir(parents=True)
    (tmp_path / "class" / "gradebook.csv").write_text("student,exercise,points,of\n")
    (tmp_path / "class2" / "feedback").mkdir(parents=True)
    (tmp_path / "class2" / "alice").mkdir()
    (tmp_path / "class2" / "feedback" / "alice.txt").write_text("mine")
    inside = os.path.join(ROOT, "course-copy")
    for argv, message in [(["make", str(taken)], "already exists and is not empty"),
                          (["make", inside], "is inside the project"),
                          (["make", str(tmp_path / "new"), "--only", "0,3"], "give exercise numbers from 1"),
                          (["make", str(tmp_path / "new"), "--only", "two"], "a selection (lab, course)"),
                          (["check", "99"], "give exercise numbers from 1"),
                          (["check", "1", "--dir", str(tmp_path)], "no attention.py there"),
                          (["check", "1", "--budget", "0"], "must be at least 0.5"),
                          (["hint", "13"], "no such exercise"),
                          (["grade", str(tmp_path / "nowhere")], "no such folder"),
                          (["grade", str(taken)], "no student folders"),
                          (["grade", str(tmp_path / "class")], "already exists; pass --force"),
                          (["grade", str(tmp_path / "class2")], "alice.txt already exists; pass --force"),
                          (["grade", str(tmp_path / "class2"), "--feedback", str(taken / "notes.txt")],
                           "a file, not a folder"),
                          (["grade", str(tmp_path / "class2"), "--out", str(tmp_path / "no" / "g.csv")],
                           "not a file in an existing folder")]:
        with pytest.raises(SystemExit) as exc:
            exercises.main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and err.startswith("error: ") and message in err, err
        assert err.count("\n") == 1, err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and (taken / "notes.txt").read_text() == "mine"
    assert not os.path.exists(inside) and not (tmp_path / "new").exists()
    assert (tmp_path / "class" / "gradebook.csv").read_text() == "student,exercise,points,of\n"
    assert (tmp_path / "class2" / "feedback" / "alice.txt").read_text() == "mine"
    assert not (tmp_path / "class2" / "gradebook.csv").exists()
