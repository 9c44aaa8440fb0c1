"""The zoo (tests/exercise_zoo.py): every wrong body fails the checks of the behaviour it breaks, with a
message that names the input it differs on, and every correct body written differently from the
project's passes every check, hidden ones included. Exercises are graded independently, so one copy
holds a body of each; one book of references serves every copy."""
import os
from collections import defaultdict

import pytest

import exercises
import grader
from exercise_kit import EVERY, KIT, ROOT, fill
from exercise_zoo import APPLIES, FAMILIES, RIGHT, WRONG

DOCS_EXAMPLE = "the values scaled instead of the scores"  # its FAIL lines are quoted in docs/teaching.md
pytestmark = pytest.mark.skipif(os.path.exists(os.path.join(ROOT, exercises.MARKER)),
                                reason="a student copy")


def rounds(entries):
    """Groups of entries with at most one per exercise."""
    by = defaultdict(list)
    for e in entries:
        by[e.exercise].append(e)
    return [[by[n][i] for n in sorted(by) if i < len(by[n])] for i in range(max(map(len, by.values())))]


def test_the_zoo_is_big_enough_covers_every_family_and_names_real_behaviours():
    assert len(WRONG) >= 108 and len(RIGHT) >= 23 and {e.exercise for e in WRONG} == set(EVERY)
    assert len({(e.exercise, e.name) for e in WRONG + RIGHT}) == len(WRONG + RIGHT)
    behaviours = {n: [c.behaviour for c in KIT.checks[n]] for n in EVERY}
    for e in WRONG:
        assert e.fails and e.where and e.family in FAMILIES, e.name
        for prefix in e.fails + e.passes:
            assert sum(b.startswith(prefix) for b in behaviours[e.exercise]) == 1, (e.name, prefix)
    for n, families in APPLIES.items():
        missing = set(families) - {e.family for e in WRONG if e.exercise == n}
        assert not missing, f"exercise {n}: no wrong body of the families {sorted(missing)}"


def judge(e, mine):
    """What is wrong with how the checks received body `e`: [] when nothing."""
    failed = [r for r in mine if not r.passed]
    if e in RIGHT:
        return [f"{e.name}: FAIL {r.behaviour} -- {r.message}" for r in failed]
    problems = [f"{e.name}: '{p}...' passed" for p in e.fails
                if not any(r.behaviour.startswith(p) for r in failed)]
    problems += [f"{e.name}: '{p}...' failed, though this body does not break it" for p in e.passes
                 if not any(r.behaviour.startswith(p) and r.passed for r in mine)]
    named = " | ".join(r.message for r in failed if r.behaviour.startswith(e.fails))  # of its behaviours
    problems += [f"{e.name}: no message of {e.fails} names {s!r} ({named})" for s in e.where + e.says
                 if s not in named]
    return problems + [f"{e.name}: {r.behaviour} -- {r.message}" for r in failed
                       if "not written yet" in r.message]


def test_wrong_bodies_fail_naming_the_behaviour_and_the_input_and_other_solutions_pass(tmp_path):
    groups = rounds(WRONG + RIGHT)
    jobs = []
    for i, group in enumerate(groups):
        copy = exercises.make(str(tmp_path / f"round{i}"), EVERY, root=ROOT)
        for e in group:
            fill(copy, e.exercise, e.bodies)
        jobs.append((copy, [e.exercise for e in group]))
    graded = grader.grade_many(jobs, workers=2, book=grader.LiveBook())
    problems = [p for group, results in zip(groups, graded) for e in group
                for p in judge(e, [r for r in results if r.exercise == e.exercise])]
    assert not problems, "\n".join(problems)
    example = next(results for group, results in zip(groups, graded) for e in group
                   if e.name == DOCS_EXAMPLE)
    with open(os.path.join(ROOT, "docs", "teaching.md"), encoding="utf-8") as f:
        docs = f.read().split(f"<!-- example: {DOCS_EXAMPLE} -->")[1].split("```text\n")[1].split("```")[0]
    shown = [line for line in docs.split("\n") if line.startswith(("PASS", "FAIL"))]
    assert shown == [exercises.result_line(r) for r in example if r.exercise == 1 and not r.hidden]
