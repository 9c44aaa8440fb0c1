"""The zoo (tests/exercise_zoo.py): every wrong body fails the checks of the behaviour it breaks, with a
message that points at it, and every correct body written differently from the project's passes every
check, hidden ones included. Exercises are graded independently, so one copy holds a body of each."""
import os
from collections import defaultdict

import pytest

import exercise_checks
import exercises
import grader
from exercise_kit import EVERY, ROOT, fill
from exercise_zoo import RIGHT, WRONG

DOCS_EXAMPLE = "the values scaled instead of the scores"  # its FAIL lines are quoted in docs/teaching.md
pytestmark = pytest.mark.skipif(os.path.exists(os.path.join(ROOT, exercises.MARKER)), reason="a student copy")


def rounds(entries):
    """Groups of entries with at most one per exercise."""
    by = defaultdict(list)
    for e in entries:
        by[e.exercise].append(e)
    return [[by[n][i] for n in sorted(by) if i < len(by[n])] for i in range(max(map(len, by.values())))]


def test_the_zoo_is_big_enough_and_names_real_behaviours():
    assert len(WRONG) >= 30 and len(RIGHT) >= 10 and {e.exercise for e in WRONG} == set(EVERY)
    behaviours = {n: [c.behaviour for c in exercise_checks.CHECKS[n]] for n in EVERY}
    for e in WRONG:
        assert e.fails, e.name
        for prefix in e.fails + e.passes:
            assert sum(b.startswith(prefix) for b in behaviours[e.exercise]) == 1, (e.name, prefix)


def test_wrong_bodies_fail_naming_the_behaviour_and_other_solutions_pass(tmp_path):
    groups = rounds(WRONG) + rounds(RIGHT)
    jobs = []
    for i, group in enumerate(groups):
        copy = exercises.make(str(tmp_path / f"round{i}"), EVERY, root=ROOT)
        for e in group:
            fill(copy, e.exercise, e.bodies)
        jobs.append((copy, [e.exercise for e in group]))
    problems = []
    graded = grader.grade_many(jobs, workers=2)
    for group, results in zip(groups, graded):
        for e in group:
            mine = [r for r in results if r.exercise == e.exercise]
            failed = [r for r in mine if not r.passed]
            if e in RIGHT:
                problems += [f"{e.name}: FAIL {r.behaviour} -- {r.message}" for r in failed]
                continue
            for prefix in e.fails:
                if not any(r.behaviour.startswith(prefix) for r in failed):
                    problems.append(f"{e.name}: '{prefix}...' passed")
            for prefix in e.passes:
                if not any(r.behaviour.startswith(prefix) and r.passed for r in mine):
                    problems.append(f"{e.name}: '{prefix}...' failed, though this body does not break it")
            messages = " | ".join(r.message for r in failed)
            problems += [f"{e.name}: no message says {s!r} ({messages})" for s in e.says if s not in messages]
            problems += [f"{e.name}: a message says {s!r} ({messages})" for s in e.not_says if s in messages]
            problems += [f"{e.name}: {r.behaviour} -- {r.message}" for r in failed
                         if "not written yet" in r.message]
    assert not problems, "\n".join(problems)
    example = next(results for group, results in zip(groups, graded) for e in group if e.name == DOCS_EXAMPLE)
    with open(os.path.join(ROOT, "docs", "teaching.md"), encoding="utf-8") as f:
        docs = f.read().split(f"<!-- example: {DOCS_EXAMPLE} -->")[1].split("```text\n")[1].split("```")[0]
    shown = [line for line in docs.split("\n") if line.startswith(("PASS", "FAIL"))]
    assert shown == [exercises.result_line(r) for r in example if r.exercise == 1 and not r.hidden]
