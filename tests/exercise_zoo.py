"""A zoo of solutions to the exercises, for tests/test_exercise_zoo.py (never copied to students).

WRONG: plausible mistakes, each with the behaviours whose checks must FAIL on it, the input its message
must name, and its family: the ways in which a class of students got wrong bodies past the checks of
an earlier kit (a parameter checked at one value, one mode only, one precision or range only, square
shapes and friendly values, a stochastic function judged on a few draws) or a mistake in the formula
itself. RIGHT: correct solutions written differently from the project's (loops, einsum, float32
arithmetic, inline code instead of a helper, another but equivalent formula), each of which must pass
every check, hidden ones included. A body replaces one function; the other targets of its exercise
keep the project's bodies.
"""
from exercise_zoo_pipeline import RIGHT as RIGHT_PIPELINE
from exercise_zoo_pipeline import WRONG as WRONG_PIPELINE
from exercise_zoo_vit import RIGHT as RIGHT_VIT
from exercise_zoo_vit import WRONG as WRONG_VIT

WRONG = WRONG_VIT + WRONG_PIPELINE
RIGHT = RIGHT_VIT + RIGHT_PIPELINE
FAMILIES = ("value", "mode", "precision", "shape", "draws", "logic")
APPLIES = {  # the families (but logic) that apply to each exercise; the zoo holds a body of each
    1: ("value", "mode", "precision", "shape", "draws"), 2: ("value", "mode", "precision", "shape"),
    3: ("value", "precision", "shape"), 4: ("value", "mode", "precision", "shape", "draws"),
    5: ("value", "mode", "precision", "shape", "draws"), 6: ("value", "mode", "precision", "shape"),
    7: ("value", "precision", "shape"), 8: ("value", "shape"), 9: ("precision", "shape"),
    10: ("value", "precision", "shape", "draws"), 11: ("value", "precision", "shape"),
    12: ("value", "mode", "precision", "shape"),
}
