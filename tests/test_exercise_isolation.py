"""The grade is decided where no graded code runs: tampering from a student's files leaves it unchanged,
a child that dies, exits 0 or answers garbage fails its exercise's remaining checks, a hanging body
costs at most its exercise's budget, and `grade` writes the gradebook of a folder of copies and one
feedback file per student, the failed behaviours with their messages."""
import csv
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import exercises
import grader
from exercise_kit import EVERY, KIT, ROOT, fill, scores

pytestmark = pytest.mark.skipif(os.path.exists(os.path.join(ROOT, exercises.MARKER)),
                                reason="a student copy")
BUDGET = 1.0  # seconds per exercise for the hanging copy

TAMPER = '''
# ---- planted by a student: none of this may change the grade
import __main__, json, os, struct, sys
import numpy, torch
__main__.run_check = lambda fn: (True, "")  # the grader of the old kit ran in this process
for name in ("grade_exercise", "grade_folder", "report", "Grader", "close"):
    setattr(__main__, name, lambda *a, **k: True)
numpy.allclose = numpy.array_equal = torch.allclose = lambda *a, **k: True
print("PASS exercise 1: returns the output (B, h, N, d_v) and the weights (B, h, N, N) [1 pt]")
print("exercise 1: 13/13 points (9/9 checks pass)")
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "gradebook.csv"), "a") as f:
    f.write("tampered,1,13,13\\n")
forged = json.dumps({"ok": True, "value": {"dict": {"result": {"seq": [{"value": 0}] * 2, "tuple": True}}}})
for fd in range(3, 40):  # a forged answer into every descriptor that takes one
    try:
        os.write(fd, b"EXK1" + struct.pack(">QQ", len(forged), 0) + forged.encode())
    except OSError:
        pass
'''


def hang_everything(copy):
    for n in EVERY:
        body = "while True:\n    pass" if n == 1 else "import time\ntime.sleep(3600)"
        fill(copy, n, {name: body for _, name in KIT.exercises[n].targets})


@pytest.fixture(scope="module")
def hanging(tmp_path_factory):
    """A fully hanging copy graded in a background thread while the other tests of this module run."""
    copy = exercises.make(str(tmp_path_factory.mktemp("hang") / "copy"), EVERY, root=ROOT)
    hang_everything(copy)
    outcome = {}

    def grade():
        start = time.monotonic()
        outcome["results"] = grader.grade_folder(copy, EVERY, budget=BUDGET)
        outcome["seconds"] = time.monotonic() - start
    thread = threading.Thread(target=grade)
    thread.start()
    yield thread, outcome
    thread.join()


@pytest.mark.usefixtures("hanging")
def test_codec_reads_data_only_and_refuses_garbage():
    tree, arrays = grader.encode({"a": (np.arange(3), 2.5, None, "x"), "b": [True]})
    assert grader.decode(tree, arrays) == {"a": (arrays["a0"], 2.5, None, "x"), "b": [True]}
    for bad in [{"eval": "1"}, {"array": "missing"}, {"seq": "no"}, {"value": [1]}, []]:
        with pytest.raises(grader.Garbage):
            grader.decode(bad, arrays)
    objects = io.BytesIO()
    np.save(objects, np.array([object()], dtype=object), allow_pickle=True)  # a pickle in an .npy
    head = json.dumps({"ok": True, "value": {"value": 1}}).encode()
    for stream in [b"junk" * 10, b"EXK1" + struct.pack(">QQ", 2**40, 0), b"EXK1" + struct.pack(
            ">QQ", len(head), len(objects.getvalue())) + head + objects.getvalue()]:
        with pytest.raises(grader.Garbage):
            grader.read_frame(io.BytesIO(stream))
    assert grader.read_frame(io.BytesIO(b"")) is None


def csv_rows(path):
    with open(path, newline="") as f:
        return [tuple(row) for row in csv.reader(f)][1:]


def test_grade_writes_the_gradebook_and_tampering_changes_nothing(tmp_path):
    numbers = [1, 9, 11]
    class_dir = tmp_path / "class"
    copies = {name: exercises.make(str(class_dir / name), numbers, root=ROOT)
              for name in ("blank", "half", "complete", "tampered")}
    for n in (1, 9):
        fill(copies["half"], n)
    for n in numbers:
        fill(copies["complete"], n)
    with open(os.path.join(copies["tampered"], "attention.py"), "a") as f:
        f.write(TAMPER)
    with open(os.path.join(copies["tampered"], "evaluate.py"), "a") as f:
        f.write("\nimport os\nos._exit(0)  # planted: an exit status of 0 before any answer\n")
    job = subprocess.run([sys.executable, "exercises.py", "grade", str(class_dir), "--jobs", "2"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert job.returncode == 0, job.stdout + job.stderr
    full = {n: sum(c.points for c in KIT.checks[n]) for n in numbers}
    solved = {"blank": (), "half": (1, 9), "complete": (1, 9, 11), "tampered": ()}
    want = []
    for name in sorted(solved):
        rows = [(name, str(n), str(full[n] if n in solved[name] else 0), str(full[n])) for n in numbers]
        want += rows + [(name, "total", str(sum(int(r[2]) for r in rows)), str(sum(full.values())))]
    assert csv_rows(class_dir / "gradebook.csv") == want
    total = sum(full[n] for name in solved for n in solved[name])
    assert f"grand total: {total}/{4 * sum(full.values())} points over 4 students" in job.stdout
    feedback = {name: (class_dir / "feedback" / f"{name}.txt").read_text() for name in solved}
    assert feedback["complete"].count("every check passes") == 3 and "FAIL" not in feedback["complete"]
    half = feedback["half"]
    assert half.startswith(f"half: {full[1] + full[9]}/{sum(full.values())} points, exercises 1, 9, 11")
    fails = [line.strip() for line in half.splitlines() if line.strip().startswith("FAIL")]
    assert len(fails) == len(KIT.checks[11])
    assert all("exercise 11" in f and "not written yet" in f for f in fails)
    assert "garbage" in feedback["tampered"] or "ended its process" in feedback["tampered"]
    again = subprocess.run([sys.executable, "exercises.py", "grade", str(class_dir)], cwd=ROOT,
                           capture_output=True, text=True, timeout=600)
    assert again.returncode == 2 and "pass --force" in again.stderr and again.stderr.count("\n") == 1


def test_a_child_that_exits_0_or_forges_answers_fails_what_it_touches(tmp_path):
    copy = exercises.make(str(tmp_path / "copy"), [1, 9, 10], root=ROOT)
    fill(copy, 1)
    fill(copy, 10)
    with open(os.path.join(copy, "evaluate.py"), "a") as f:
        f.write("\nimport os\nos._exit(0)\n")
    results = grader.grade_folder(copy, [1, 9, 10])
    assert scores(results) == {n: (0 if n == 9 else full, full) for n, full in
                               ((n, sum(c.points for c in KIT.checks[n])) for n in (1, 9, 10))}
    nine = [r for r in results if r.exercise == 9]
    assert "ended its process (exit status 0) without answering" in nine[0].message
    assert all(r.message.startswith("not run: the graded code ended its process") for r in nine[1:])
    with open(os.path.join(copy, "attention.py"), "a") as f:
        f.write(TAMPER.replace("gradebook.csv", "planted.csv"))
    one = [r for r in grader.grade_folder(copy, [1]) if not r.passed]
    assert one and "garbage" in one[0].message and all(r.message.startswith("not run") for r in one[1:])


def test_a_hanging_copy_costs_one_budget_per_exercise(hanging):
    thread, outcome = hanging
    thread.join(timeout=len(EVERY) * BUDGET + 60)
    results, seconds = outcome["results"], outcome["seconds"]
    assert seconds <= len(EVERY) * BUDGET + 1, f"{seconds:.1f} s for {len(EVERY)} budgets of {BUDGET:g} s"
    assert not any(r.passed for r in results) and sorted({r.exercise for r in results}) == EVERY
    for n in EVERY:
        first, *rest = [r for r in results if r.exercise == n]
        assert f"budget of {BUDGET:g} s ran out" in first.message, first.message
        assert all(r.message.startswith("not run: the exercise's budget") for r in rest), n


def test_each_copy_is_graded_in_a_fresh_process_of_its_own(tmp_path):
    copies = [exercises.make(str(tmp_path / name), [9], root=ROOT) for name in ("alice", "bob")]
    for copy in copies:  # a body that names the process it runs in
        fill(copy, 9, {"iou_from_counts": "import os\nraise RuntimeError(f'pid {os.getpid()}')"})
    pids = []
    for results in grader.grade_many([(copy, [9]) for copy in copies], workers=2):
        pids.append({int(m) for r in results for m in re.findall(r"pid (\d+)", r.message)})
    assert all(len(p) == 1 for p in pids), pids  # one process per copy, for all its checks
    assert len(pids[0] | pids[1] | {os.getpid()}) == 3, pids  # neither this one nor the other copy's
