"""A student copy holds no solution of its own exercises, anywhere: not in the blanked modules, not in its
course files (their references are withheld), not in tests/ (the project's test helpers that would solve
an exercise, each record's `withheld`, are withheld too, and the tests that need them report a skip).
For every exercise, a copy made for it alone is searched for the known solution forms (each of which the
project does hold, so that the search can fail) and for every line of the project's own solution."""
import ast
import os
import re

import pytest

import exercises
from exercise_kit import EVERY, KIT, ROOT

pytestmark = pytest.mark.skipif(os.path.exists(os.path.join(ROOT, exercises.MARKER)),
                                reason="a student copy")

FORMS = {  # solution forms, by exercise: each must occur in the project and in no copy made for the exercise
    1: [r"softmax\(scores", r"/ math\.sqrt\(d\)"],  # attention.py, the tests' einsum references
    2: [r'einsum\("bnk,hdk->bhnd"', r"unflatten\(-1, \(h, d\)\)", r"view\(B, N, h, d\)\.transpose\(1, 2\)",
        r"w\[i \* d:\(i \+ 1\) \* d\]"],
    3: [r"stride=P\b", r"permute\(0, 2, 4, 1, 3, 5\)"],  # the strided convolution, the six-axis permute
    4: [r"gelu\([^\n]*fc2", r"self\.act\(self\.fc2"],  # GELU after fc2: the tests' and the course's layers
    5: [r"n // grid, n % grid", r"reshape\(B, gh, gw, D\)", r"h\.transpose\(1, 2\)\.reshape"],
    6: [r"exp\(-conv\(hidden, gate\.psi", r'sigmoid\((self\.psi_norm|conv_norm\("psi")'],
    7: [r"-\s*size\s*%\s*multiple", r"2 \* size - 1 - i\b", r"\(\(0, 0\), rows, cols\)",
        r"\[\(0, 0\)\] \* \(image\.ndim - 2\)"],
    8: [r"n \* keep \+ 2 \* margin"],
    9: [r"tp / \(tp \+ fp \+ fn\)"],
    10: [r"normal\(0\.0, sigma", r"floor\(\w+ \* \w+ - \w+ / 2\)"],
    11: [r"2 \* counts\[1\] - counts\[2\]", r"_zero_peak_fix\(counts\[1\], counts\[2\]\)",
         r"interp\((np\.cumsum\(counts\)|source_cdf)"],
    12: [r"flatten\(1\)\[:, 0\] >= 0"],
}


def texts(root, files):
    out = {}
    for rel in files:
        try:
            with open(os.path.join(root, rel), encoding="utf-8") as f:
                out[rel] = f.read()
        except UnicodeDecodeError:
            pass  # figures
    return out


def solution_lines(number, project):
    """The code lines of the project's bodies of `number`'s targets that the project holds nowhere else
    than in them, its course file and the test helpers the record withholds (25 characters or more)."""
    e, spans, lines = KIT.exercises[number], {}, set()
    for path, name in list(e.targets) + list(e.withheld):
        source = project[path].split("\n")
        first, last = exercises.body_span(exercises.find_function(ast.parse(project[path]), name), source)
        spans.setdefault(path, []).append((first, last))
        codes = (line.split("#")[0].strip() for line in source[first - 1:last])
        lines |= {code for code in codes if len(code) >= 25}
    public = []
    for rel, text in project.items():
        if rel in KIT.files.values():
            continue
        kept = text.split("\n")
        for first, last in spans.get(rel, []):
            kept[first - 1:last] = [""] * (last - first + 1)
        public.append("\n".join(kept))
    public = "\n".join(public)
    return {line for line in lines if line not in public}


def test_the_solution_forms_occur_in_the_project():
    project = texts(ROOT, exercises.project_files(ROOT))
    for n in EVERY:
        for form in FORMS[n]:
            assert any(re.search(form, t) for t in project.values()), (n, form)
        assert solution_lines(n, project), n


@pytest.mark.parametrize("number", EVERY)
def test_a_copy_made_for_an_exercise_holds_no_solution_of_it(number, tmp_path):
    copy = exercises.make(str(tmp_path / "copy"), [number], root=ROOT)
    project = texts(ROOT, exercises.project_files(ROOT))
    mine = texts(copy, exercises.project_files(copy))
    for rel, text in mine.items():
        for form in FORMS[number]:
            assert not re.search(form, text), f"{rel} holds {form!r}, a solution of exercise {number}"
    lines = solution_lines(number, project)
    for rel, text in mine.items():
        found = [line for line in lines if line in text]
        assert not found, f"{rel} holds lines of the solution of exercise {number}: {found}"
    for path, name in KIT.exercises[number].withheld:  # and the tests that used them skip, naming why
        body = exercises.find_function(ast.parse(mine[path]), name).body
        assert isinstance(body[-1], ast.Raise) and exercises.WITHHELD in ast.unparse(body[-1]), (path, name)
