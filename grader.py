"""Grading in a process of its own: the graded code never runs in the process that decides the grade.

Course kit (exercises.py) machinery. A check in the grading process chooses seeded inputs and calls
`g.run(probe, **inputs)`; the probe runs in a child process that imports the graded folder, and its
answer crosses back as length-prefixed frames of JSON and `np.savez` arrays, read with
`np.load(allow_pickle=False)` (never unpickled), each echoing its request's random id. The grading
process then judges it against torch's own operators, closed forms or `g.expect(reference, ...)`
(computed here, or read from the answers a student copy ships). A child that raises fails that
check, named by the input, the student's file and line; one that dies, hangs past the exercise's
time budget or answers garbage is stopped (its whole process group) and fails the exercise's
remaining checks. Each copy gets a fresh interpreter of its own (a fork server that skipped its
imports saved under a minute on a class of 30, docs/teaching.md). No SIGALRM: the parent keeps the
time, so the budget holds on every platform.
"""
import contextlib
import hashlib
import io
import json
import os
import queue
import re
import secrets
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import types
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

import cli

HERE = os.path.dirname(os.path.abspath(__file__))
COURSE = "course"  # the kit's folder: judging.py and one file per exercise, ex01_attention.py ...
ANSWERS = ".exercise_answers.npz"  # written into a student copy: the recorded answers of its checks
FRAME, LIMIT = b"EXK1", 256 * 2**20


@dataclass(frozen=True)
class Check:
    exercise: int
    behaviour: str
    points: int
    hidden: bool
    fn: object

    @property
    def name(self):
        return f"{self.fn.__module__}.{self.fn.__name__}"


@dataclass(frozen=True)
class Kit:
    exercises: dict  # number -> judging.Exercise, in order
    checks: dict  # number -> [Check], in the order of its file
    probes: dict  # 'module.function' -> probe
    files: dict  # number -> its file, relative to the project


def load_module(name, path, view=None):
    """The module at `path` under `name`; `view` turns its source into what a student copy has first
    (exercises.student_view). It stays in sys.modules while the kit loads, so the exercises import
    judging."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(view(source) if view else source, path, "exec"), module.__dict__)
    return module


def load_kit(root=HERE, view=None):
    """The course kit of the project or copy at `root`: judging.py, then each exercise file. sys.modules
    is left as it was, so loading a copy's kit replaces nothing of this one."""
    folder, names = os.path.join(root, COURSE), ["judging"]
    before = {name: sys.modules.get(name) for name in names}
    try:
        judging = load_module("judging", os.path.join(folder, "judging.py"))
        exercises, checks, probes, files = {}, {}, {"judging.call": judging.call}, {}
        for name in sorted(n for n in os.listdir(folder) if re.fullmatch(r"ex\d+_\w+\.py", n)):
            names.append(name[:-3])
            before[name[:-3]] = sys.modules.get(name[:-3])
            module = load_module(name[:-3], os.path.join(folder, name), view)
            e = module.EXERCISE
            own = [fn for fn in vars(module).values() if getattr(fn, "__module__", None) == module.__name__]
            exercises[e.number], files[e.number] = e, f"{COURSE}/{name}"
            checks[e.number] = [Check(e.number, *fn.check, fn) for fn in own if hasattr(fn, "check")]
            probes.update({f"{module.__name__}.{fn.__name__}": fn for fn in own
                           if getattr(fn, "is_probe", False)})
    finally:
        for name in names:  # put back what was there
            if before.get(name) is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = before[name]
    order = sorted(exercises)
    return Kit({n: exercises[n] for n in order}, {n: checks[n] for n in order}, probes,
               {n: files[n] for n in order})


_KIT, _KIT_LOCK = [], threading.Lock()


def kit():
    """The grading side's kit, whole (this process only: a child loads the student view); loaded once,
    under a lock, since the threads of `grade --jobs` ask for it at once."""
    with _KIT_LOCK:
        if not _KIT:
            _KIT.append(load_kit())
    return _KIT[0]


# ---------------------------------------------------------------- values across the process boundary

class Garbage(ValueError):
    """What came back is not a well-formed answer."""


class Opaque:
    """A value the graded code returned that cannot cross as data: only its type name does."""

    def __init__(self, type_name):
        self.type_name = type_name

    def __repr__(self):
        return f"<{self.type_name}>"


def encode(value, prefix="a"):
    """(JSON tree, {name: array}) of a value made of tensors, arrays, numbers, strings, lists and dicts."""
    import torch
    arrays = {}

    def put(a, kind):
        name = f"{prefix}{len(arrays)}"
        arrays[name] = a
        return {kind: name}

    def walk(x):
        if torch.is_tensor(x):
            t = x.detach().cpu()
            return put((t.float() if t.dtype == torch.bfloat16 else t).numpy().copy(), "tensor")
        if isinstance(x, np.ndarray):
            return put(x, "array") if x.dtype.kind in "biufc" else {"other": f"array of {x.dtype}"}
        if isinstance(x, np.generic):
            return {"value": x.item()} if x.dtype.kind in "biuf" else {"other": type(x).__name__}
        if x is None or isinstance(x, (bool, int, float, str)):
            return {"value": x}
        if isinstance(x, (tuple, list)):
            return {"seq": [walk(item) for item in x], "tuple": isinstance(x, tuple)}
        if isinstance(x, dict) and all(isinstance(k, str) for k in x):
            return {"dict": {k: walk(v) for k, v in x.items()}}
        return {"other": type(x).__name__}
    return walk(value), arrays


def decode(tree, arrays, tensors=False):
    """The value of `encode`; raises Garbage on anything malformed (it may come from graded code)."""
    import torch

    def walk(node):
        if not isinstance(node, dict) or len(node) not in (1, 2):
            raise Garbage("a malformed value")
        if "tensor" in node or "array" in node:
            a = arrays.get(node.get("tensor", node.get("array")))
            if not isinstance(a, np.ndarray):
                raise Garbage("a missing array")
            return torch.from_numpy(a.copy()) if tensors and "tensor" in node else a
        if "value" in node:
            if not (node["value"] is None or isinstance(node["value"], (bool, int, float, str))):
                raise Garbage("a malformed number")
            return node["value"]
        if "seq" in node and isinstance(node["seq"], list):
            items = [walk(item) for item in node["seq"]]
            return tuple(items) if node.get("tuple") else items
        if "dict" in node and isinstance(node["dict"], dict):
            return {str(k): walk(v) for k, v in node["dict"].items()}
        if "other" in node and isinstance(node["other"], str):
            return Opaque(node["other"])
        raise Garbage("an unknown kind of value")
    return walk(tree)


def digest(value):
    tree, arrays = encode(value)
    h = hashlib.sha256(json.dumps(tree, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}{a.dtype.str}{a.shape}".encode() + a.tobytes())
    return h.hexdigest()


def write_frame(stream, header, arrays):
    payload = b""
    if arrays:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        payload = buffer.getvalue()
    head = json.dumps(header).encode()
    stream.write(FRAME + struct.pack(">QQ", len(head), len(payload)) + head + payload)
    stream.flush()


def read_exactly(stream, n):
    chunks, left = [], n
    while left:
        chunk = stream.read(left)
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream):
    """(header, arrays), or None at the end of the stream; Garbage for anything else."""
    start = read_exactly(stream, 20)
    if not start:
        return None
    if len(start) < 20 or start[:4] != FRAME:
        raise Garbage("bytes that are not an answer")
    n_head, n_payload = struct.unpack(">QQ", start[4:])
    if n_head > LIMIT or n_payload > LIMIT:
        raise Garbage("an answer over the size limit")
    head, payload = read_exactly(stream, n_head), read_exactly(stream, n_payload)
    if len(head) < n_head or len(payload) < n_payload:
        raise Garbage("a truncated answer")
    try:
        header = json.loads(head)
        arrays = {}
        if payload:
            with np.load(io.BytesIO(payload), allow_pickle=False) as npz:
                arrays = {name: npz[name] for name in npz.files}
    except Exception as exc:  # noqa: BLE001 - any failure to parse is garbage
        raise Garbage(f"an unreadable answer ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise Garbage("a malformed answer")
    return header, arrays


# ---------------------------------------------------------------- the child: imports the graded folder

def error_answer(exc, folder):
    """What went wrong in the graded code, as data: the exception, and its place in the folder's files."""
    text = " ".join(str(exc).split())[:300]
    if isinstance(exc, NotImplementedError) and re.match(r"exercise \d+:", text):
        return {"blank": text}
    if isinstance(exc, SystemExit):
        return {"type": "SystemExit", "message": f"the code called sys.exit({exc.code!r})"}
    inside = [f for f in traceback.extract_tb(exc.__traceback__)
              if os.path.isabs(f.filename) and os.path.commonpath([f.filename, folder]) == folder]
    where = inside[-1] if inside else None
    return {"type": type(exc).__name__, "message": text, "line": where.line if where else None,
            "where": f"{os.path.relpath(where.filename, folder)}:{where.lineno}" if where else None}


def serve(folder, channel_in, channel_out, probes):
    """The child's loop: requests in, answers out (the graded code's prints go to stderr instead)."""
    folder = os.path.abspath(folder)
    sys.path[:] = [folder] + [p for p in sys.path[1:] if os.path.abspath(p or ".") != HERE]
    sys.modules.pop("cli", None)  # the graded folder imports its own
    os.chdir(folder)
    write_frame(channel_out, {"hello": True}, {})
    while True:
        request = read_frame(channel_in)
        if request is None:
            return 0
        header, arrays = request
        try:
            value = probes[header["probe"]](**decode(header["inputs"], arrays, tensors=True))
            tree, out = encode(value)
            reply = {"ok": True, "value": tree}
        except BaseException as exc:  # noqa: BLE001 - a failure of the graded code is an answer
            reply, out = {"ok": False, "error": error_answer(exc, folder)}, {}
        write_frame(channel_out, dict(reply, id=header.get("id")), out)


def prepare_child(view):
    """What every child needs before it sees a graded folder: torch on one thread and the probes."""
    import torch
    torch.set_num_threads(1)  # tiny tensors
    return load_kit(HERE, view).probes


def child_main(folder, view):
    """A child started as a fresh interpreter: its stdin and stdout are the channel."""
    channel_in, channel_out = os.fdopen(os.dup(0), "rb"), os.fdopen(os.dup(1), "wb")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    return serve(folder, channel_in, channel_out, prepare_child(view))


class Trouble(Exception):
    """The child died, hung or answered garbage: the exercise's remaining checks fail."""


class ProbeError(Exception):
    """The graded code raised; `info` is the child's description of it (data)."""

    def __init__(self, info, where=None):
        super().__init__(info)
        self.info = info if isinstance(info, dict) else {}
        self.where = where  # the input it raised on, as the check names it

    def text(self, number):
        info = {k: str(v) for k, v in self.info.items() if v is not None}
        if "blank" in info:
            blank = info["blank"]
            return f"not written yet: {blank}" if blank.startswith(f"exercise {number}:") else \
                f"this check needs {blank.split(':')[0]}, which is still blank"
        place = f" at {info['where']} `{info.get('line', '')}`" if "where" in info else ""
        on = f"on {self.where}: " if self.where else ""
        return f"{on}{info.get('type', 'error')}{place}: {info.get('message', '')}"


CHILD_ENV = dict(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE",
                 PYTHONDONTWRITEBYTECODE="1")
SCRIPT = [sys.executable, "-B", os.path.join(HERE, "exercises.py")]


class Child:
    """One fresh interpreter that imports a graded folder and answers probes; stopped when its time is
    up. Every copy gets its own: no two copies ever share a process."""

    def __init__(self, folder):
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(SCRIPT + ["_child", folder], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, cwd=folder,
                                     env=dict(os.environ, **CHILD_ENV),
                                     start_new_session=os.name == "posix")
        self.pid, self.requests, self.answers = self.proc.pid, self.proc.stdin, self.proc.stdout
        self.frames, self.ready = queue.Queue(), False
        threading.Thread(target=self._read, daemon=True).start()
        LIVE.add(self)

    def _read(self):
        try:
            while True:
                frame = read_frame(self.answers)
                self.frames.put(("eof",) if frame is None else ("frame",) + frame)
                if frame is None:
                    return
        except Garbage as exc:
            self.frames.put(("garbage", str(exc)))
        except (OSError, ValueError):
            self.frames.put(("eof",))

    def ask(self, probe, inputs, deadline):
        if not self.ready:
            self._next(deadline)
            self.ready = True
        tree, arrays = encode(inputs)
        question = secrets.token_hex(8)  # an answer must name it: a forged or stray answer is garbage
        try:
            write_frame(self.requests, {"id": question, "probe": probe, "inputs": tree}, arrays)
        except OSError:
            pass  # it died: the reader reports how
        header, arrays = self._next(deadline)
        if header.get("id") != question:
            self.stop()
            raise Trouble("the graded code's process answered garbage (an answer to another question)")
        if header.get("ok") is True and "value" in header:
            try:
                return decode(header["value"], arrays)
            except Garbage as exc:
                self.stop()
                raise Trouble(f"the graded code's process answered garbage ({exc})") from None
        if header.get("ok") is False:
            raise ProbeError(header.get("error"))
        self.stop()
        raise Trouble("the graded code's process answered garbage (neither a value nor an error)")

    def _next(self, deadline):
        try:
            item = self.frames.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            self.stop()
            raise Trouble("out of time") from None
        if item[0] == "frame" and ("hello" in item[1]) == (not self.ready):
            return item[1], item[2]
        if item[0] != "eof":
            self.stop()
            why = item[1] if item[0] == "garbage" else "out of turn"
            raise Trouble(f"the graded code's process answered garbage ({why})")
        code = self.proc.wait()
        self.stderr.seek(0)
        tail = self.stderr.read()[-2000:].decode(errors="replace")
        last = [line for line in tail.splitlines() if line.strip()]
        status = f"exit status {code}" if code >= 0 else f"signal {-code}"
        raise Trouble(f"the graded code ended its process ({status}) without answering"
                      + (f"; its last words: {last[-1].strip()[:200]}" if last else ""))

    def stop(self):
        """Kill the process (its whole group on POSIX); reaping it may take a while, so not here."""
        LIVE.discard(self)
        if os.name != "posix":
            with contextlib.suppress(OSError):
                self.proc.kill()
            return
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except OSError:  # gone already
            with contextlib.suppress(OSError):
                os.kill(self.pid, signal.SIGKILL)
        threading.Thread(target=self.proc.wait, daemon=True).start()


LIVE = weakref.WeakSet()  # children not yet stopped, for an interrupted grade
CANCELLED = threading.Event()


class LiveBook:
    """References computed here, in the instructor's kit; `recorded` keeps them for a student copy."""

    def __init__(self):
        self.recorded, self.count = {}, 0

    def answer(self, key, reference, args):
        known, stamp = self.recorded.get(key), digest(args)
        if known is None or known["digest"] != stamp:  # a book that grades many folders computes once
            self.count += 1
            tree, arrays = encode(reference(*args), prefix=f"r{self.count}_")
            known = self.recorded[key] = {"digest": stamp, "tree": tree, "arrays": arrays}
        return decode(known["tree"], known["arrays"], tensors=True)


class RecordedBook:
    """References read from the answers a student copy ships, since its references are withheld."""

    def __init__(self, path):
        try:
            with np.load(path, allow_pickle=False) as npz:
                self.arrays = {name: npz[name] for name in npz.files}
            self.index = json.loads(str(self.arrays.pop("index")))
        except (OSError, KeyError, ValueError):
            raise cli.UsageError(f"{path}: the recorded answers are missing or damaged; ask for a new copy") \
                from None

    def answer(self, key, reference, args):
        entry = self.index.get(key)
        assert entry is not None, f"no recorded answer for this check in {ANSWERS}; ask for a new copy"
        assert entry["digest"] == digest(args), "this check's inputs differ from those its answer was " \
            "recorded for (the course files edited, or another numpy or torch draws other numbers)"
        return decode(entry["tree"], self.arrays, tensors=True)


class Grader:
    """What a check sees: run(probe, where=..., **inputs) in the graded code's process, expect(reference,
    *args) here (or from the recorded answers)."""

    def __init__(self, session, check, deadline):
        self.session, self.check, self.deadline, self.n_expected = session, check, deadline, 0

    def run(self, probe, where=None, **inputs):
        """The probe's answer on `inputs`; `where` names them if the graded code raises."""
        try:
            return self.session.ask(f"{probe.__module__}.{probe.__name__}", inputs, self.deadline)
        except ProbeError as exc:
            raise ProbeError(exc.info, where) from None

    def expect(self, reference, *args):
        self.n_expected += 1
        return self.session.book.answer(f"{self.check.name}/{self.n_expected - 1}", reference, args)


class Session:
    """Grades one folder, with one child at a time (a fresh one after a death, a hang or garbage)."""

    def __init__(self, folder, book):
        self.folder, self.book, self.child = os.path.abspath(folder), book, None

    def ask(self, probe, inputs, deadline):
        if CANCELLED.is_set():
            raise Trouble("grading was interrupted")
        self.child = self.child or Child(self.folder)
        try:
            return self.child.ask(probe, inputs, deadline)
        except Trouble:
            self.child = None
            raise

    def close(self):
        if self.child:
            self.child.stop()
            self.child = None


@dataclass(frozen=True)
class Result:
    exercise: int
    behaviour: str
    points: int
    hidden: bool
    passed: bool
    message: str


def grade_exercise(session, number, budget=None, hidden=True, start=None):
    """Every check of one exercise within its time budget, counted from `start` -> ([Result], deadline)."""
    budget = budget or kit().exercises[number].budget_s
    deadline, broken, results = (start or time.monotonic()) + budget, None, []
    for c in kit().checks[number]:
        if c.hidden and not hidden:
            continue
        passed, message = False, f"not run: {broken}"
        if not broken:
            try:
                c.fn(Grader(session, c, deadline))
                passed, message = True, ""
            except AssertionError as exc:
                message = " ".join(str(exc).split()) or "assertion failed"
            except ProbeError as exc:
                message = exc.text(number)
            except Trouble as exc:
                text = f"the exercise's budget of {budget:g} s ran out (a loop that never ends?)" \
                    if str(exc) == "out of time" else str(exc)
                message, broken = text, f"{text.split(' (')[0]}, during '{c.behaviour}'"
            except Exception as exc:  # noqa: BLE001 - an answer the check could not read
                message = f"an answer of an unexpected form ({type(exc).__name__}: {exc})"
        results.append(Result(number, c.behaviour, c.points, c.hidden, passed, message))
    return results, deadline


def grade_folder(folder, numbers, book=None, budget=None, hidden=True):
    """[Result] of every check of `numbers` on one folder, in order. An exercise's clock starts when
    the one before it ended, or at its deadline if it ran over (stopping a child takes a moment), so
    the whole never takes longer than the sum of the budgets."""
    session, results, deadline = Session(folder, book or LiveBook()), [], None
    try:
        for n in numbers:
            start = time.monotonic() if deadline is None else min(time.monotonic(), deadline)
            mine, deadline = grade_exercise(session, n, budget, hidden, start)
            results += mine
        return results
    finally:
        session.close()


def grade_many(jobs, workers=1, **kw):
    """[[Result]] of grade_folder(folder, numbers) for each (folder, numbers), `workers` at a time. The
    references here compute on tiny tensors: one torch thread each is several times faster."""
    with cli.torch_threads(1), ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda job: grade_folder(*job, **kw), jobs))
