"""The shape of the project: top-level modules import one another in one direction only, each setting has
one home (presets.THESIS), the model files stand below everything that drives them, and functions take the
values they use, never the argparse object."""
import ast
import dataclasses
import glob
import os

import presets
import reproduce

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = {os.path.basename(p)[:-3]: p for p in glob.glob(os.path.join(ROOT, "*.py"))}
COURSE = sorted(glob.glob(os.path.join(ROOT, "course", "*.py")))
MODEL_FILES = {"attention", "vit", "unet", "unetr2d", "ynetr2d"}


def _tree(name):
    with open(MODULES[name], encoding="utf-8") as f:
        return ast.parse(f.read())


def _imports(name):
    """The top-level modules `name` imports anywhere in its file, function-level imports included."""
    found = set()
    for node in ast.walk(_tree(name)):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found & set(MODULES) - {name}


def _cycle(graph):
    """One import cycle of `graph` as a list of names, or None."""
    state = {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, path + [nxt])
                if found:
                    return found
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start, [start])
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_top_level_modules_import_one_another_in_one_direction():
    graph = {name: _imports(name) for name in MODULES}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))
    assert "train" not in graph["presets"] and "runs" not in graph["train"]
    assert graph["models"] <= MODEL_FILES | {"cli"}, graph["models"]  # the networks by name, nothing else
    assert graph["attention"] == set() and graph["vit"] <= {"attention"}


def test_no_config_field_carries_a_default_every_setting_is_in_thesis():
    for cls in (presets.RunConfig, presets.FitConfig):
        for field in dataclasses.fields(cls):
            assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING, \
                (cls.__name__, field.name)
            assert field.name in presets.THESIS or field.name in ("fit", "preset"), field.name
    for name, preset in presets.PRESETS.items():
        assert set(preset) == set(presets.THESIS), name  # every preset is {**THESIS, ...}


def test_no_function_takes_the_argparse_object_outside_the_command_line():
    """A parameter read as `args.flag` (an argparse Namespace) only in parse_args, main and *_command."""
    entry = ("parse_args", "main", "refuse_bad_arguments")
    for name in MODULES:
        for node in ast.walk(_tree(name)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name in entry \
                    or node.name.endswith("_command"):
                continue
            params = {a.arg for a in node.args.args + node.args.kwonlyargs}
            read = {n.value.id for n in ast.walk(node) if isinstance(n, ast.Attribute)
                    and isinstance(n.value, ast.Name) and n.value.id in params & {"args", "opts"}}
            assert not read, f"{name}.{node.name} reads {', '.join(read)}.<flag>"


def test_every_table_is_an_entry_of_reproduce_a1_included():
    assert set(reproduce.TABLES) == {"5.1", "5.2", "5.4", "5.5", "A1"}


def test_files_and_functions_stay_readable():
    for name, path in [*MODULES.items(), *((os.path.relpath(p, ROOT), p) for p in COURSE)]:
        lines = open(path, encoding="utf-8").read().splitlines()
        assert len(lines) <= (500 if name == "train" else 600), (name, len(lines))
        assert all(len(line) <= 110 for line in lines), name
        for node in ast.walk(ast.parse("\n".join(lines))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                assert node.end_lineno - node.lineno < 60, f"{name}.{node.name}"
    fit = next(n for n in ast.walk(_tree("train")) if isinstance(n, ast.FunctionDef) and n.name == "fit")
    assert fit.end_lineno - fit.lineno < 60
