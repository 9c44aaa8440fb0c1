"""Helpers of the course kit's tests: write bodies into a student copy made by exercises.make."""
import ast
import os
import re
import textwrap
from typing import NamedTuple

import exercises
import grader

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KIT = grader.kit()
EVERY = sorted(KIT.exercises)


def solve(copy, path, qualname, body):
    """Write `body` in place of the raise that `make` left in `qualname`."""
    file = os.path.join(copy, path)
    with open(file) as f:
        lines = f.read().split("\n")
    raise_at = exercises.find_function(ast.parse("\n".join(lines)), qualname).body[-1].lineno - 1
    indent = re.match(r"\s*", lines[raise_at]).group()
    lines[raise_at] = textwrap.indent(textwrap.dedent(body).strip("\n"), indent)
    with open(file, "w") as f:
        f.write("\n".join(lines))


def project_body(path, qualname):
    """The project's own body of `qualname` (after its docstring), as source."""
    with open(os.path.join(ROOT, path)) as f:
        text = f.read()
    lines = text.split("\n")
    first, last = exercises.body_span(exercises.find_function(ast.parse(text), qualname), lines)
    return "\n".join(lines[first - 1:last])


def fill(copy, number, bodies=None):
    """Every target of exercise `number` in `copy`: `bodies` where given, the project's body elsewhere."""
    for path, qualname in KIT.exercises[number].targets:
        solve(copy, path, qualname, (bodies or {}).get(qualname) or project_body(path, qualname))


def scores(results):
    """{exercise: (points, of)} of a list of grader.Result."""
    out = {}
    for r in results:
        got, of = out.get(r.exercise, (0, 0))
        out[r.exercise] = (got + r.points * r.passed, of + r.points)
    return out


class Body(NamedTuple):
    """A body for the zoo (tests/exercise_zoo*.py): a plausible mistake or a correct alternative."""
    exercise: int
    name: str
    bodies: dict  # qualname -> source of the body, at any indentation
    family: str = ""  # of a wrong body: value, mode, precision, shape or draws (past narrow checks), or logic
    fails: tuple = ()  # behaviour texts (prefixes) that must FAIL
    where: tuple = ()  # the input it fails on, as the FAIL messages name it (each must appear in one)
    says: tuple = ()  # more texts that must appear in the FAIL messages
    passes: tuple = ()  # behaviour texts (prefixes) that must PASS: the failure is reported where it is
