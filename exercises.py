"""Course kit: exercises solved in the real code of this project, graded by their behaviour.

    python exercises.py list [lab|course|1,4,7] [--markdown]   # objective, minutes, task, hint, questions
    python exercises.py hint 3                                 # the second hint: the key idea
    python exercises.py make ../course [--only lab]            # a student copy with those bodies blanked
    python exercises.py check [3|1,4,7|all] [--dir ../course]  # grade one folder, one line per check
    python exercises.py grade ../class [--out gradebook.csv]   # grade every copy: CSV, feedback, table

Thesis: one exercise per block of chapters 2-4 and Appendix A; course/ holds one file per exercise
(its record, probes, references and checks, e.g. course/ex01_attention.py for Eq. 2.1) and
course/judging.py, the judging they share; grader.py runs the graded code in a process of its own.
`make` parses each file with `ast` and replaces the body of every chosen function, after its
signature and docstring, with `raise NotImplementedError("exercise N: ...")`; every other byte is
copied, so the copy imports, builds its models and runs its tests. A copy ships the course files of
its own exercises only, with their references withheld and their hidden checks removed, and the
answers this kit recorded at `make` instead; the project's test helpers that would solve one of its
exercises (each record's `withheld`) are withheld too. Grading never imports the graded code: a
child process does, runs each probe on the inputs the check chose and sends back arrays and JSON,
which the grading process reads as data and judges.
"""
import ast
import csv
import json
import os
import re
import shutil
import sys
import textwrap

import numpy as np

import cli
import grader

HERE = os.path.dirname(os.path.abspath(__file__))
MARKER = ".exercises.json"  # written into a student copy: its exercises and its hidden checks
ANSWERS = grader.ANSWERS  # written into a student copy: the recorded answers of its checks
COPY_DIRS = ("tests", ".ci", "figures", "docs", grader.COURSE)  # besides the top-level files
COPY_SUFFIXES = (".py", ".md", ".txt", ".toml", ".cfg", ".ini")
KIT_TESTS = re.compile(r"tests/(test_exercise|exercise_)")  # the kit's own tests hold solutions
LAB = (1, 2, 3, 4, 7, 9)  # a 2-hour lab: the ViT core (Eq. 2.1 to the encoder layer), padding, metric
WITHHELD = "withheld from this copy"  # the start of a withheld test helper's message


def selections():
    """{"lab": ..., "course": every exercise of this kit} (a copy's kit has its own exercises only)."""
    every = tuple(grader.kit().exercises)
    return {"lab": tuple(n for n in LAB if n in every), "course": every}


# ---------------------------------------------------------------- blanking bodies with ast

def find_function(tree, qualname):
    """The def named by `qualname` ('f' or 'Class.method') at module level; the last one if redefined."""
    node, scope = None, tree.body
    for part in qualname.split("."):
        found = [n for n in scope if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                 and n.name == part]
        if not found:
            return None
        node, scope = found[-1], found[-1].body
    return node if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def body_span(func, lines):
    """(first, last) 1-based lines of what blanking replaces: after the docstring (or the header,
    with the comments under it) to the end of the function; last = first - 1 for an empty span."""
    first_stmt = func.body[0]
    has_doc = isinstance(first_stmt, ast.Expr) and isinstance(first_stmt.value, ast.Constant) \
        and isinstance(first_stmt.value.value, str)
    if has_doc:
        first = first_stmt.end_lineno + 1
    else:
        if first_stmt.lineno == func.lineno:
            raise cli.UsageError(f"{func.name}: its body shares the line of its def; put it on lines of its "
                                 "own")
        first = first_stmt.lineno
        while first - 1 > func.lineno and lines[first - 2].strip()[:1] in ("", "#"):
            first -= 1  # comments between the header and the first statement go too
    return first, max(func.end_lineno, first - 1)


def splice(text, spans):
    """`text` with each (first, last, replacement) span of 1-based whole lines replaced, bottom up."""
    lines = [line + "\n" for line in text.split("\n")]
    lines[-1] = lines[-1][:-1]
    for first, last, new in sorted(spans, reverse=True):
        if new and last >= first and not lines[last - 1].endswith("\n"):
            new = new.rstrip("\r\n")  # the span ended the file without a newline
        lines[first - 1:last] = [new] if new else []
    return "".join(lines)


def blank_source(text, targets):
    """`text` with the body of each (qualname, message) in `targets` replaced by raise NotImplementedError.

    Splices whole lines, so every byte outside the replaced bodies is kept.
    """
    tree, lines = ast.parse(text), text.split("\n")
    spans = []
    for qualname, message in targets:
        func = find_function(tree, qualname)
        if func is None:
            raise cli.UsageError(f"no function {qualname} found")
        first, last = body_span(func, lines)
        indent = re.match(r"[ \t]*", lines[func.body[0].lineno - 1]).group()
        eol = "\r\n" if lines[func.lineno - 1].endswith("\r") else "\n"
        spans.append((first, last, f"{indent}raise NotImplementedError({json.dumps(message)}){eol}"))
    out = splice(text, spans)
    new_tree = ast.parse(out)  # must still be valid Python with the same functions
    for qualname, _ in targets:
        assert isinstance(find_function(new_tree, qualname).body[-1], ast.Raise), qualname
    return out


def decorated(node, name):
    """The decorator of `node` named `name` (a bare name or a call), or None."""
    for d in getattr(node, "decorator_list", []):
        if getattr(d.func if isinstance(d, ast.Call) else d, "id", None) == name:
            return d
    return None


def student_view(source):
    """An exercise's course file as a student copy gets it: hidden checks removed, references withheld."""
    tree, lines = ast.parse(source), source.split("\n")
    spans = []
    for node in tree.body:
        mark = decorated(node, "check")
        if isinstance(mark, ast.Call) and any(k.arg == "hidden" and getattr(k.value, "value", None) is True
                                              for k in mark.keywords):
            last = node.end_lineno
            while last < len(lines) and not lines[last].strip():
                last += 1  # and the blank lines after it
            spans.append((node.decorator_list[0].lineno, last, ""))
    out = splice(source, spans)
    withheld = [n.name for n in ast.parse(out).body if decorated(n, "reference") is not None]
    return blank_source(out, [(name, "withheld from student copies: their checks read the recorded answers")
                              for name in withheld])


def raise_message(number):
    return f"exercise {number}: {grader.kit().exercises[number].title} (python exercises.py list {number})"


# ---------------------------------------------------------------- make

def project_files(root, numbers=None):
    """Relative paths of what a copy holds: the top-level sources and texts and COPY_DIRS, without the
    kit's own tests and, when `numbers` are given, without the course files of other exercises."""
    files = [n for n in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, n))
             and (n.endswith(COPY_SUFFIXES) or n == ".gitignore")]
    for folder in COPY_DIRS:
        for base, dirs, names in os.walk(os.path.join(root, folder)):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            files += [os.path.relpath(os.path.join(base, n), root).replace(os.sep, "/")
                      for n in sorted(names) if not n.endswith(".pyc")]
    others = set() if numbers is None else \
        {path for n, path in grader.kit().files.items() if n not in numbers}
    return [f for f in files if not KIT_TESTS.match(f) and f not in others]


_RECORDED = {}


def recorded_answers(root, numbers):
    """The answers of every public check of `numbers`, recorded on the project at `root` (which must pass)."""
    if root not in _RECORDED:
        book, checks = grader.LiveBook(), grader.kit().checks
        failed = [r for r in grader.grade_many([(root, list(checks))], book=book, hidden=False)[0]
                  if not r.passed]
        if failed:
            first = failed[0]
            raise cli.UsageError(f"{root} fails exercise {first.exercise}'s check '{first.behaviour}' "
                                 f"({first.message}); a copy is made from a project that passes them all")
        _RECORDED[root] = book.recorded
    names = {c.name for n in numbers for c in grader.kit().checks[n]}
    return {k: v for k, v in _RECORDED[root].items() if k.split("/")[0] in names}


def write_answers(path, answers):
    index, arrays = {}, {}
    for key, entry in answers.items():
        index[key] = {"digest": entry["digest"], "tree": entry["tree"]}
        arrays.update(entry["arrays"])
    np.savez(path, index=np.array(json.dumps(index)), **arrays)


def blanked_texts(root, numbers):
    """{path: text} of every file a copy for `numbers` changes: the targets blanked, the test helpers
    that would solve them withheld, and the course files as a student sees them."""
    by_file = {}
    for n in numbers:
        e = grader.kit().exercises[n]
        for path, qualname in e.targets:
            by_file.setdefault(path, {})[qualname] = raise_message(n)
        for path, qualname in e.withheld:
            by_file.setdefault(path, {}).setdefault(qualname, f"{WITHHELD}: it would solve exercise {n}")
    texts = {}
    for path, targets in by_file.items():
        try:
            with open(os.path.join(root, path), encoding="utf-8", newline="") as f:
                texts[path] = blank_source(f.read(), list(targets.items()))
        except (OSError, cli.UsageError) as exc:
            raise cli.UsageError(f"{os.path.join(root, path)}: {exc}; this project no longer has what the "
                                 "exercise blanks or withholds, so update its record in course/") from None
    for n in numbers:
        path = grader.kit().files[n]
        with open(os.path.join(root, path), encoding="utf-8", newline="") as f:
            texts[path] = student_view(f.read())
    return texts


def make(directory, numbers, root=HERE, selection=None):
    """Write a student copy of the project at `root` into `directory`, the chosen exercises blanked.

    Everything is prepared in memory first: a refused copy writes nothing.
    """
    out, root = os.path.abspath(directory), os.path.abspath(root)
    cli.refuse_nonempty(out, "make", "choose a new folder (nothing was written)")
    if os.path.commonpath([out, root]) == root:
        raise cli.UsageError(f"{directory} is inside the project, where its tests would run with the "
                             "project's; choose a folder outside it, e.g. ../course")
    if os.path.exists(os.path.join(root, MARKER)):
        raise cli.UsageError(f"{root} is a student copy; make copies from the instructor's project")
    texts = blanked_texts(root, numbers)
    answers = recorded_answers(root, numbers)
    hidden = {str(n): [len(cs), sum(c.points for c in cs)]
              for n, cs in ((n, [c for c in grader.kit().checks[n] if c.hidden]) for n in numbers)}
    os.makedirs(out, exist_ok=True)
    for rel in project_files(root, numbers):
        os.makedirs(os.path.dirname(os.path.join(out, rel)), exist_ok=True)
        if rel in texts:
            with open(os.path.join(out, rel), "w", encoding="utf-8", newline="") as f:
                f.write(texts[rel])
            shutil.copymode(os.path.join(root, rel), os.path.join(out, rel))
        else:
            shutil.copy2(os.path.join(root, rel), os.path.join(out, rel))
    write_answers(os.path.join(out, ANSWERS), answers)
    marker = {"exercises": list(numbers), "selection": selection, "hidden": hidden}
    cli.write_json(marker, os.path.join(out, MARKER))
    return out


# ---------------------------------------------------------------- the command line

def copy_marker(folder):
    """The marker `make` wrote into a student copy, or None for the project itself."""
    path = os.path.join(folder, MARKER)
    return cli.read_json(path, "copy marker") if os.path.exists(path) else None


def parse_numbers(text, flag, allowed=None):
    """'1,4,7', 'lab', 'course' or 'all' -> sorted exercise numbers (all: `allowed`, or every exercise)."""
    every, named = list(grader.kit().exercises), selections()
    if text.strip() == "all":
        return sorted(allowed or every)
    if text.strip() in named:
        return sorted(named[text.strip()])
    try:
        numbers = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        numbers = []
    if allowed is not None and numbers and any(n not in allowed for n in numbers):
        made = ", ".join(map(str, allowed))
        raise cli.UsageError(f"{flag} {text}: this copy was made for exercises {made}")
    if not numbers or any(n not in every for n in numbers):
        raise cli.UsageError(f"{flag} {text}: give exercise numbers from {every[0]} to {every[-1]}, comma "
                             f"separated, a selection ({', '.join(named)}) or all (python exercises.py "
                             "list shows them)")
    return numbers


def points_of(number):
    """(points, hidden points) of an exercise; in a student copy the hidden ones come from its marker."""
    checks, marker = grader.kit().checks[number], copy_marker(HERE)
    hidden = sum(c.points for c in checks if c.hidden)
    if marker:
        hidden = marker["hidden"].get(str(number), [0, 0])[1]
    return sum(c.points for c in checks if not c.hidden) + hidden, hidden


def markdown():
    """The exercises and selections as Markdown tables (docs/teaching.md holds this output)."""
    rows = ["| # | exercise | thesis | code | minutes | points (hidden) |", "|---|---|---|---|---|---|"]
    for e in grader.kit().exercises.values():
        code = "; ".join(f"`{path}: {name}`" for path, name in e.targets)
        rows.append(f"| {e.number} | {e.title} | {e.thesis} | {code} | {e.minutes} | "
                    "{} ({})".format(*points_of(e.number)) + " |")
    rows += ["", "| selection | exercises | minutes | points |", "|---|---|---|---|"]
    for name, numbers in selections().items():
        minutes = sum(grader.kit().exercises[n].minutes for n in numbers)
        rows.append(f"| `{name}` | {', '.join(map(str, numbers))} | {minutes} | "
                    f"{sum(points_of(n)[0] for n in numbers)} |")
    return "\n".join(rows)


def show(numbers):
    wrap = dict(width=104, initial_indent="    ", subsequent_indent="      ")
    for n in numbers:
        e = grader.kit().exercises[n]
        points, hidden = points_of(n)
        print(f"{e.number:2d}. {e.title}  [{e.thesis}]  {e.minutes} min, {points} points ({hidden} hidden)")
        print("    " + "; ".join(f"{path}: {name}" for path, name in e.targets))
        for label, text in [("Objective", e.objective), ("Task", e.task),
                            ("Hint", f"{e.hints[0]} (python exercises.py hint {n} gives the key idea)")] \
                + [("Checkpoint", q) for q in e.questions]:
            print(textwrap.fill(f"{label}: {text}", **wrap))
        print()


def result_line(r):
    """PASS exercise 1: behaviour [2 pts] (or FAIL ... -- why), as `check` prints it."""
    tag = f"[{r.points} pt{'s' if r.points > 1 else ''}{', hidden' if r.hidden else ''}]"
    return f"{'PASS' if r.passed else 'FAIL'} exercise {r.exercise}: {r.behaviour} {tag}" + \
        ("" if r.passed else f" -- {r.message}")


def report(results, hidden_summary=None):
    """Print one line per check and a total per exercise and in all; True when everything passed."""
    got = of = 0
    for n in sorted({r.exercise for r in results}):
        mine = [r for r in results if r.exercise == n]
        for r in mine:
            print(result_line(r), flush=True)
        count, points = (hidden_summary or {}).get(str(n), [0, 0])
        if count:
            print(f"HIDDEN exercise {n}: {count} more check{'s' * (count > 1)} "
                  f"({points} point{'s' * (points > 1)}) run when your instructor grades")
        score, total = sum(r.points for r in mine if r.passed), sum(r.points for r in mine)
        print(f"exercise {n}: {score}/{total} points ({sum(r.passed for r in mine)}/{len(mine)} checks pass)")
        got, of = got + score, of + total
    numbers = sorted({r.exercise for r in results})
    hidden = sum((hidden_summary or {}).get(str(n), [0, 0])[1] for n in numbers)
    print(f"total: {got}/{of} points, exercises {', '.join(map(str, numbers))}"
          + (f" (plus {hidden} points in hidden checks)" if hidden else ""))
    return all(r.passed for r in results)


def check_command(args):
    folder, mine = os.path.abspath(args.dir), copy_marker(HERE)
    theirs = copy_marker(folder)
    numbers = parse_numbers(args.numbers, "check", allowed=(mine or theirs or {}).get("exercises"))
    missing = sorted({p for n in numbers for p, _ in grader.kit().exercises[n].targets
                      if not os.path.isfile(os.path.join(folder, p))})
    if missing:
        raise cli.UsageError(f"--dir {args.dir}: no {', '.join(missing)} there; pass the folder of the "
                             "project or of a copy made by python exercises.py make")
    book = grader.RecordedBook(os.path.join(HERE, ANSWERS)) if mine else grader.LiveBook()
    results = grader.grade_many([(folder, numbers)], book=book, budget=args.budget, hidden=not mine)[0]
    return 0 if report(results, mine and mine["hidden"]) else 1


# ---------------------------------------------------------------- grade: a class of copies

def students_of(class_dir, feedback_dir):
    folders = [os.path.join(class_dir, n) for n in sorted(os.listdir(class_dir))
               if os.path.isdir(os.path.join(class_dir, n)) and not n.startswith(".")
               and os.path.abspath(os.path.join(class_dir, n)) != feedback_dir]
    if not folders:
        raise cli.UsageError(f"{class_dir}: no student folders in it (one copy made by make per student)")
    return folders


def class_numbers(folders, only):
    """The exercises to grade: --only, or those the copies were made for (which must agree)."""
    if only:
        return parse_numbers(only, "--only")
    made = {os.path.basename(f): tuple((copy_marker(f) or {}).get("exercises") or ()) for f in folders}
    if len(set(made.values())) != 1 or not next(iter(made.values())):
        listing = "; ".join(f"{name}: {','.join(map(str, ns)) or 'no marker'}" for name, ns in made.items())
        raise cli.UsageError(f"the copies do not say one set of exercises ({listing}); pass --only")
    return sorted(next(iter(made.values())))


def write_atomically(path, write):
    """write(file) into a temporary file beside `path`, then rename it to `path`."""
    tmp = f"{path}.tmp"
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        write(f)
    os.replace(tmp, path)


def gradebook(rows, path):
    """Write (student, exercise, points, of) rows as CSV, atomically."""
    header = ["student", "exercise", "points", "of"]
    write_atomically(path, lambda f: csv.writer(f).writerows([header] + rows))


def feedback_text(name, results, numbers):
    """What a student gets back: the points per exercise and every failed behaviour with its message."""
    got, of = sum(r.points for r in results if r.passed), sum(r.points for r in results)
    lines = [f"{name}: {got}/{of} points, exercises {', '.join(map(str, numbers))}", ""]
    for n in numbers:
        mine = [r for r in results if r.exercise == n]
        failed = [r for r in mine if not r.passed]
        lines.append(f"exercise {n}, {grader.kit().exercises[n].title}: "
                     f"{sum(r.points for r in mine if r.passed)}/{sum(r.points for r in mine)} points"
                     + ("" if failed else ", every check passes"))
        lines += [f"  {result_line(r)}" for r in failed] + [""]
    return "\n".join(lines)


def outputs_of(class_dir, gradebook_flag, feedback_flag, force):
    """(gradebook path as shown, its absolute path, feedback folder) of `grade` (its --out and --feedback,
    None: the class folder's), refusing to replace existing ones unless `force`."""
    shown = gradebook_flag or os.path.join(class_dir, "gradebook.csv")
    out = os.path.abspath(shown)
    feedback = os.path.abspath(feedback_flag or os.path.join(class_dir, "feedback"))
    if os.path.exists(out) and not force:
        raise cli.UsageError(f"--out {shown} already exists; pass --force to replace it, or choose another "
                             "file")
    if not os.path.isdir(os.path.dirname(out)) or os.path.isdir(out):
        raise cli.UsageError(f"--out {shown}: not a file in an existing folder")
    if os.path.exists(feedback) and not os.path.isdir(feedback):
        raise cli.UsageError(f"--feedback {feedback_flag}: a file, not a folder for the feedback files")
    return shown, out, feedback


def refuse_feedback(feedback, folders, force):
    taken = [f for f in (os.path.join(feedback, f"{os.path.basename(s)}.txt") for s in folders)
             if os.path.exists(f)]
    if taken and not force:
        raise cli.UsageError(f"feedback file {taken[0]} already exists; pass --force to replace the "
                             "feedback files, or choose another folder with --feedback")


def grade_all(folders, numbers, jobs, budget):
    try:
        return grader.grade_many([(f, numbers) for f in folders], workers=jobs, budget=budget)
    except KeyboardInterrupt:  # stop every child now, so that the other threads end at once too
        grader.CANCELLED.set()
        for child in list(grader.LIVE):
            child.stop()
        raise


def grade_command(args):
    if copy_marker(HERE):
        raise cli.UsageError("grade runs from the instructor's project, which holds the hidden checks and "
                             "the references; this is a student copy")
    class_dir = os.path.abspath(args.class_dir)
    if not os.path.isdir(class_dir):
        raise cli.UsageError(f"{args.class_dir}: no such folder")
    shown, out, feedback = outputs_of(args.class_dir, args.out, args.feedback, args.force)
    folders = students_of(class_dir, feedback)
    refuse_feedback(feedback, folders, args.force)
    numbers = class_numbers(folders, args.only)
    results = grade_all(folders, numbers, args.jobs, args.budget)
    rows, table = [], []
    os.makedirs(feedback, exist_ok=True)
    for folder, mine in zip(folders, results):
        name = os.path.basename(folder)
        cells = [(sum(r.points for r in mine if r.exercise == n and r.passed),
                  sum(r.points for r in mine if r.exercise == n)) for n in numbers]
        rows += [(name, n, p, of) for n, (p, of) in zip(numbers, cells)]
        rows.append((name, "total", sum(p for p, _ in cells), sum(of for _, of in cells)))
        table.append([name] + [f"{p}/{of}" for p, of in cells] + [f"{rows[-1][2]}/{rows[-1][3]}"])
        text = feedback_text(name, mine, numbers)
        write_atomically(os.path.join(feedback, f"{name}.txt"), lambda f, text=text: f.write(text))
    gradebook(rows, out)
    header = ["student"] + [f"ex{n}" for n in numbers] + ["total"]
    widths = [max(len(str(row[i])) for row in [header] + table) for i in range(len(header))]
    for row in [header] + table:
        print("  ".join(str(cell).rjust(w) for cell, w in zip(row, widths)))
    got, of = sum(r[2] for r in rows if r[1] == "total"), sum(r[3] for r in rows if r[1] == "total")
    print(f"grand total: {got}/{of} points over {len(folders)} students ({100 * got / max(of, 1):.1f}%); "
          f"gradebook {shown}, feedback in {os.path.relpath(feedback)}")
    return 0


def parser():
    p = cli.ArgumentParser(prog="exercises.py", description="Course exercises in the real code of this "
                           "project, graded by their behaviour in a separate process.")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="the exercises: objective, minutes, task, hint, checkpoint questions")
    ls.add_argument("numbers", nargs="?", default="all", help="e.g. 3, 1,4,7, lab or course (default: all)")
    ls.add_argument("--markdown", action="store_true", help="the exercise and selection tables as Markdown")
    hint = sub.add_parser("hint", help="the second hint of one exercise: the key idea")
    hint.add_argument("number", type=cli.at_least(int, 1))
    mk = sub.add_parser("make", help="write a student copy with the chosen exercises blanked")
    mk.add_argument("dir", help="a new or empty folder outside this project")
    mk.add_argument("--only", default="all", help="exercise numbers (1,4,7), lab or course (default: all)")
    budget = dict(type=cli.at_least(float, 0.5), default=None,
                  help="seconds for each exercise's checks (default: each exercise's own budget)")
    ck = sub.add_parser("check", help="grade exercises in one folder, one line per check")
    ck.add_argument("numbers", nargs="?", default="all",
                    help="e.g. 3, 1,4,7 or all (a copy's own exercises)")
    ck.add_argument("--dir", default=HERE, help="the project or copy to grade (default: this one)")
    ck.add_argument("--budget", **budget)
    gr = sub.add_parser("grade", help="grade every student copy in a folder: a CSV gradebook, one feedback "
                        "file per student and a table")
    gr.add_argument("class_dir", help="a folder of copies, one per student (the folder name is the student)")
    gr.add_argument("--only", help="the exercises to grade (default: those the copies were made for)")
    gr.add_argument("--out", help="the gradebook CSV (default: CLASS_DIR/gradebook.csv)")
    gr.add_argument("--feedback", help="the folder of the feedback files, STUDENT.txt (default: "
                    "CLASS_DIR/feedback)")
    gr.add_argument("--force", action="store_true", help="replace an existing gradebook and feedback files")
    gr.add_argument("--jobs", type=cli.at_least(int, 1), default=1, help="copies graded at the same time")
    gr.add_argument("--budget", **budget)
    return p


def run(argv):
    if argv[:1] == ["_child"]:  # the process that imports a graded folder (started by Child)
        return grader.child_main(argv[1], student_view)
    args = parser().parse_args(argv)
    if args.command == "list":
        return print(markdown()) if args.markdown else show(parse_numbers(args.numbers, "list"))
    if args.command == "hint":
        e = grader.kit().exercises.get(args.number)
        if e is None:
            raise cli.UsageError(f"hint {args.number}: no such exercise (python exercises.py list shows "
                                 "them)")
        return print(textwrap.fill(f"{e.number}. {e.title}. Nudge: {e.hints[0]} Key idea: {e.hints[1]}",
                                   104))
    if args.command == "make":
        numbers = parse_numbers(args.only, "--only")
        out = make(args.dir, numbers, selection=args.only if args.only in selections() else None)
        minutes = sum(grader.kit().exercises[n].minutes for n in numbers)
        print(f"wrote {out}: exercises {', '.join(map(str, numbers))} blanked (about {minutes} minutes); "
              f"hand it out, then grade with python exercises.py grade CLASS_DIR or check --dir {args.dir}")
        return 0
    return check_command(args) if args.command == "check" else grade_command(args)


def main(argv=None):
    return cli.main(run, argv)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BrokenPipeError:  # output piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
