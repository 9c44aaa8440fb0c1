"""exercises.py: `make` blanks the chosen bodies by `ast` and keeps every other byte; each exercise's
check fails on the blanked copy and passes on the project; wrong solutions fail on a line that names
the behaviour while other solutions pass; a blanked copy still builds its models."""
import ast
import difflib
import os
import re
import subprocess
import sys
import textwrap

import pytest

import exercises

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = pytest.mark.skipif(os.path.exists(os.path.join(ROOT, exercises.MARKER)),
                                reason="a student copy: its exercises are blank on purpose")


def run(args, cwd):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def scores(stdout):
    """{exercise: (passed, total)} from the summary lines of `check`."""
    return {int(n): (int(p), int(t)) for n, p, t in
            re.findall(r"^exercise (\d+): (\d+)/(\d+) behaviours pass$", stdout, re.M)}


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


@pytest.fixture(scope="module")
def blank_copy(tmp_path_factory):
    return exercises.make(str(tmp_path_factory.mktemp("kit") / "course"), sorted(exercises.BY_NUMBER), root=ROOT)


def test_list_shows_ten_or_more_exercises_with_reference_file_task_and_hint(capsys):
    assert exercises.main(["list"]) is None
    out = capsys.readouterr().out
    assert len(exercises.EXERCISES) >= 10
    for e in exercises.EXERCISES:
        assert re.search(rf"^ ?{e.number}\. {re.escape(e.title)}  \[.*(§|Eq\.|Fig\.|Table|App\.)", out, re.M)
        for path, name in e.targets:
            assert f"{path}: {name}" in out
    assert out.count("Task: ") == out.count("Hint: ") == len(exercises.EXERCISES)


def test_make_changes_only_the_chosen_bodies(blank_copy):
    targets = {}
    for e in exercises.EXERCISES:
        for path, name in e.targets:
            targets.setdefault(path, {})[name] = e.number
    files = exercises.project_files(ROOT)
    assert "tests/test_exercises.py" in files and ".ci/run" in files and not any(f.startswith("runs/") for f in files)
    assert sorted(exercises.project_files(blank_copy)) == sorted(files)
    for rel in files:
        with open(os.path.join(ROOT, rel), "rb") as f:
            before = f.read()
        with open(os.path.join(blank_copy, rel), "rb") as f:
            after = f.read()
        if rel not in targets:
            assert after == before, rel
            continue
        old, new = before.decode(), after.decode()
        old_defs, new_defs = qualnames(ast.parse(old)), qualnames(ast.parse(new))
        assert set(old_defs) == set(new_defs), rel
        old_lines, new_lines = old.split("\n"), new.split("\n")
        spans = []
        for name, number in targets[rel].items():
            func = new_defs[name]
            assert len(func.body) <= 2 and isinstance(func.body[-1], ast.Raise), f"{rel}: {name}"
            assert f'NotImplementedError("exercise {number}: ' in new_lines[func.body[-1].lineno - 1]
            first, last = exercises.body_span(old_defs[name], old_lines)
            spans.append((first, last))
            # the signature and docstring stay, line for line
            new_first = exercises.body_span(func, new_lines)[0]
            assert old_lines[old_defs[name].lineno - 1:first - 1] == new_lines[func.lineno - 1:new_first - 1], name
        enclosing = {name.rsplit(".", 1)[0] for name in targets[rel] if "." in name}
        for name, node in old_defs.items():
            if name not in targets[rel] and name not in enclosing:  # every other def, byte for byte
                assert ast.get_source_segment(old, node) == ast.get_source_segment(new, new_defs[name]), name
        changes = difflib.SequenceMatcher(None, old_lines, new_lines, autojunk=False).get_opcodes()
        for tag, i1, i2, _, _ in changes:  # every changed line lies in a blanked body
            assert tag == "equal" or any(first - 1 <= i1 and i2 <= last for first, last in spans), (rel, i1, i2)


def test_blank_source_edge_cases():
    source = ("class A:\n    def f(self):\r\n        '''Doc.'''\r\n        return 1\r\n"
              "def g(x):\n    return 0\n"
              "def g(x):\n    # a comment that gives the answer away\n    y = x\n    return y\n"
              "def k():\n    '''Only a docstring.'''\n"
              "def h(a,\n      b):  # end\n    return a\n\n\n# tail\nZ = 1")
    targets = [("A.f", "exercise 1: f"), ("g", "exercise 2: g"), ("k", "exercise 3: k"), ("h", "exercise 4: h")]
    out = exercises.blank_source(source, targets)
    assert "def g(x):\n    return 0\n" in out  # the first g is dead code: Python keeps the later one
    assert not re.search("return [1ya]|the answer", out) and out.endswith("# tail\nZ = 1")
    assert "    def f(self):\r\n        '''Doc.'''\r\n        raise NotImplementedError(\"exercise 1: f\")\r\n" in out
    assert "def h(a,\n      b):  # end\n    raise NotImplementedError(\"exercise 4: h\")\n" in out
    namespace = {}
    exec(compile(out, "<blanked>", "exec"), namespace)
    for call, message in [(lambda: namespace["A"]().f(), "exercise 1: f"), (lambda: namespace["g"](1), "exercise 2: g"),
                          (lambda: namespace["k"](), "exercise 3: k"), (lambda: namespace["h"](1, 2), "exercise 4: h")]:
        with pytest.raises(NotImplementedError, match=message):
            call()
    with pytest.raises(exercises.UsageError, match="no function A.missing"):
        exercises.blank_source(source, [("A.missing", "x")])


def test_blanked_copy_fails_every_check_and_the_project_passes(blank_copy):
    jobs = [subprocess.Popen([sys.executable, "exercises.py", "check", "all", *extra], cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for extra in (["--dir", blank_copy], [])]
    (blank, _), (project, error) = (job.communicate(timeout=600) for job in jobs)  # the two run side by side
    assert [job.returncode for job in jobs] == [1, 0], project + error
    blank_scores, project_scores = scores(blank), scores(project)
    assert sorted(blank_scores) == sorted(project_scores) == sorted(exercises.BY_NUMBER)
    for n, (passed, total) in blank_scores.items():
        assert passed == 0 and total >= 4, f"exercise {n}: {passed}/{total} pass on its blank"
        assert project_scores[n] == (total, total), f"exercise {n}: {project_scores[n]} on the project"
    assert "FAIL exercise 4: pre-norm: the attention reads LayerNorm1(x)" in blank
    assert "not written yet: exercise 4: " in blank


def test_wrong_solutions_fail_naming_the_behaviour_and_other_solutions_pass(tmp_path):
    copy = exercises.make(str(tmp_path / "course"), [1, 2, 7, 9, 12], root=ROOT)
    solve(copy, "attention.py", "scaled_dot_product_attention", """
        weights = torch.softmax(q @ k.transpose(-2, -1), dim=-1)  # no 1/sqrt(d_k)
        return F.dropout(weights, dropout, training) @ v, weights
    """)
    solve(copy, "evaluate.py", "iou_foreground", """
        pred, mask = np.asarray(pred, bool), np.asarray(mask, bool)
        tn = (~pred & ~mask).sum()  # true negatives in the denominator
        return float((pred & mask).sum() / ((pred | mask).sum() + tn))
    """)
    for name, formula in [("iou_from_counts", "tp / (tp + fp + fn)"), ("dice_from_counts", "2 * tp / (2 * tp + fp + fn)")]:
        solve(copy, "evaluate.py", name, f"return 1.0 if tp + fp + fn == 0 else {formula}")
    solve(copy, "evaluate.py", "dice_coefficient", "return dice_from_counts(*confusion(pred, mask))")
    solve(copy, "train.py", "compute_loss", """
        if isinstance(output, tuple):
            seg, rec = output
            if pretext:
                return F.mse_loss(rec, y)
            return alpha * F.binary_cross_entropy_with_logits(seg, y) + (1 - alpha) * F.mse_loss(rec, x)
        if pretext:
            return F.mse_loss(torch.sigmoid(output), y)
        bce = F.binary_cross_entropy_with_logits(output, y)
        return bce + dice_loss(output, y) if loss == "bce_dice" else bce
    """)
    solve(copy, "attention.py", "MultiHeadSelfAttention.forward", """
        B, N, _ = x.shape
        heads = [p(x).reshape(B, N, self.n_heads, self.head_dim).permute(0, 2, 1, 3)
                 for p in (self.q_proj, self.k_proj, self.v_proj)]
        out, weights = scaled_dot_product_attention(*heads, self.dropout, self.training)
        out = self.out_proj(torch.einsum("bhnd->bnhd", out).flatten(2))
        return (out, weights) if return_weights else out
    """)
    solve(copy, "data.py", "padding_for", """
        total = (multiple - size % multiple) % multiple
        return total - total // 2, total // 2
    """)
    solve(copy, "data.py", "pad_to_multiple", """
        out = image
        for axis in (-2, -1):  # index arithmetic instead of np.pad: d c b a | a b c d, period 2n
            n = out.shape[axis]
            before, after = padding_for(n, multiple)
            index = np.mod(np.arange(-before, n + after), 2 * n)
            out = np.take(out, np.where(index >= n, 2 * n - 1 - index, index), axis=axis)
        return out
    """)
    result = run(["exercises.py", "check", "all", "--dir", copy], ROOT)
    got = scores(result.stdout)
    assert result.returncode == 1 and sorted(got) == sorted(exercises.BY_NUMBER), result.stdout + result.stderr
    for line in ["FAIL exercise 1: scores are scaled by 1/sqrt(d_k) (Eq. 2.1)",
                 "FAIL exercise 1: output equals torch's F.scaled_dot_product_attention",
                 "PASS exercise 1: identical keys give uniform weights",  # a scale does not change uniform weights
                 "FAIL exercise 9: true negatives do not count",
                 "PASS exercise 9: IoU_F = TP / (TP + FP + FN) and Dice",
                 "FAIL exercise 12: Attention Y-Net: alpha * MSE(reconstruction, x) + (1 - alpha) * BCE",
                 "FAIL exercise 12: Attention Y-Net: alpha = 1 trains only the reconstruction",
                 "PASS exercise 12: segmentation: BCE on the logits"]:
        assert line in result.stdout, line
    for n, (passed, total) in got.items():  # every other exercise is graded on its own and passes
        assert (passed < total) == (n in (1, 9, 12)), f"exercise {n}: {passed}/{total}"


def test_a_copy_with_every_exercise_blank_still_builds_its_models(blank_copy):
    result = run(["train.py", "--summary"], blank_copy)
    assert result.returncode == 0 and "4,243,553 trainable parameters" in result.stdout, result.stderr


def test_make_and_check_refuse_bad_input_with_one_line(tmp_path, capsys):
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    inside = os.path.join(ROOT, "course-copy")
    for argv, message in [(["make", str(taken)], "already exists and is not empty"),
                          (["make", inside], "is inside the project"),
                          (["make", str(tmp_path / "new"), "--only", "0,3"], "give exercise numbers from 1"),
                          (["make", str(tmp_path / "new"), "--only", "two"], "give exercise numbers from 1"),
                          (["check", "99"], "give exercise numbers from 1"),
                          (["check", "1", "--dir", str(tmp_path)], "no attention.py there")]:
        assert exercises.main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert [p.name for p in taken.iterdir()] == ["notes.txt"] and (taken / "notes.txt").read_text() == "mine"
    assert not os.path.exists(inside) and not (tmp_path / "new").exists()
