"""Exact equality of two parsed answers (sympy objects): the comparison behind the strict judge.

math-verify calls two numbers equal when they agree to 6 decimals or when a 15-digit evaluation of their difference
chops to zero, so 1/2^60 equals 1/2^61, 1.414214 equals sqrt(2), and a fraction of huge powers equals a different
one. Here two values are equal only when their difference is exactly zero: a difference that evaluates, with
guaranteed digits, to something non-zero is a proof that they differ; a difference that evaluates to zero must
also simplify to zero. The one numeric comparison is for a gold written as a decimal (the problem asked for a
rounded value): an exact answer that rounds to it, at the gold's number of decimals, matches it.

Containers compare by their elements: sets in any order, tuples in order, intervals with their open or closed ends,
matrices entry by entry. An open interval and a pair are the same notation, `(a, b)`, so they match each other. A
gold equation `a = b` accepts the same equation or an answer equal to either side that is not a mere name (`x`,
`AB`, `f(2)`); an answer equation is read by its last side, as math-verify reads `x = 5`. Inequalities compare as
the sets they describe.

This module imports sympy at its top: import it where a comparison runs (the grading workers), not at start-up.
"""

from __future__ import annotations

from sympy import S, Abs, And, Basic, Eq, Expr, Float, FiniteSet, Interval, MatrixBase, Rational, Set, Tuple
from sympy.core.relational import Relational

# Digits sympy must guarantee when it evaluates a difference: far beyond any decimal answer's precision.
_DIGITS = 30


def same_value(gold: Basic, answer: Basic, *, gold_decimals: int | None = None) -> bool:
    """Whether `answer` is exactly `gold` (gold first: only a gold equation accepts one of its sides).

    gold_decimals: the number of decimals of a gold written as a decimal; an exact answer rounding to it matches.
    """
    gold, answer = _exact(gold), _exact(answer)
    if _undefined(gold) or _undefined(answer):  # 1/0 (`12:00` parses so) equals itself and nothing
        return False
    if gold == answer:
        return True
    if _is_equation(gold):
        return _matches_equation(gold, answer)
    if _is_equation(answer):  # `x = 5` answers 5
        answer = _sides(answer)[-1]
    if _is_relation(gold) or _is_relation(answer):
        return _same_relation(gold, answer)
    if isinstance(gold, (Set, Tuple)) or isinstance(answer, (Set, Tuple)):
        return _same_collection(gold, answer)
    if isinstance(gold, MatrixBase) or isinstance(answer, MatrixBase):
        return (isinstance(gold, MatrixBase) and isinstance(answer, MatrixBase) and gold.shape == answer.shape
                and all(same_value(g, a) for g, a in zip(gold, answer)))
    if isinstance(gold, Expr) and isinstance(answer, Expr):
        if gold_decimals is not None and gold.is_number and answer.is_number:
            return _rounds_to(answer, gold, gold_decimals)
        return _zero(gold - answer)
    return False


def _exact(value: Basic) -> Basic:
    """`value` evaluated (binomials, percent factors) and with every float read as the decimal it was written as."""
    if isinstance(value, Relational):  # evaluated whole, `\binom{5}{2} = 10` would become the boolean True
        return value.func(_exact(value.lhs), _exact(value.rhs), evaluate=False)
    if isinstance(value, And):
        return And(*(_exact(arg) for arg in _ordered(value)), evaluate=False)
    try:
        value = value.doit()
    except Exception:  # doit on an expression it cannot evaluate: keep it as parsed
        pass
    floats = value.atoms(Float) if isinstance(value, Basic) else set()
    # str() gives the decimal as written (up to the 15 digits the parser kept): 0.1 is 1/10, not a binary float.
    return value.xreplace({number: Rational(str(number)) for number in floats}) if floats else value


def _undefined(value: Basic) -> bool:
    return isinstance(value, Basic) and value.has(S.NaN, S.ComplexInfinity)


def _zero(difference: Expr) -> bool:
    """Whether `difference` is exactly zero: evaluated first (cheap, and a proof when non-zero), then simplified."""
    if difference == 0:
        return True
    if difference.is_Rational:
        return False
    if difference.is_number and _evaluates_non_zero(difference):
        return False
    return difference.equals(0) is True


def _evaluates_non_zero(number: Expr) -> bool:
    """True when sympy evaluates `number` with significant digits and finds it is not zero."""
    value = number.evalf(_DIGITS)
    if not value.is_finite:
        return value.is_finite is False
    return any(part != 0 and (part.is_Rational or getattr(part, "_prec", 0) > 1) for part in value.as_real_imag())


def _rounds_to(answer: Expr, gold: Expr, decimals: int) -> bool:
    """Whether `answer` is within half a unit of the gold's last decimal (it rounds to the gold)."""
    difference = answer - gold
    if _zero(difference):
        return True
    if not answer.is_real:  # a complex value rounds to no real decimal
        return False
    try:
        return bool(Abs(difference) <= Rational(1, 2 * 10**decimals))
    except TypeError:  # sympy cannot decide the inequality numerically
        return False


def _is_equation(value: Basic) -> bool:
    return isinstance(value, Eq) or (isinstance(value, And) and all(isinstance(arg, Eq) for arg in value.args))


def _is_relation(value: Basic) -> bool:
    return isinstance(value, Relational) or (isinstance(value, And) and all(
        isinstance(arg, Relational) for arg in value.args))


def _sides(equation: Basic) -> list[Basic]:
    """The sides of `a = b` or of a chain `a = b = c`, left to right."""
    relations = _ordered(equation) if isinstance(equation, And) else [equation]
    sides = []
    for relation in relations:
        sides += [side for side in (relation.lhs, relation.rhs) if not sides or side != sides[-1]]
    return sides


def _matches_equation(gold: Basic, answer: Basic) -> bool:
    sides = _sides(gold)
    identity = all(_closed(side) for side in sides)
    if identity:  # an identity, `\binom{5}{2} = 10`: either side is the answer
        values = sides
    elif _is_name(sides[0]):  # `x = 5`, `y = x^2 + 1`: the value named
        values = [side for side in sides[1:] if not _is_name(side)]
    else:  # an equation in unknowns, `2x + 4y = 3`: only an equivalent equation answers it
        values = []
    if _is_equation(answer):
        if identity:
            return any(same_value(value, _sides(answer)[-1]) for value in values)
        return _same_equation(sides, _sides(answer))
    return any(same_value(value, answer) for value in values)


def _closed(side: Basic) -> bool:
    return (isinstance(side, Expr) and side.is_number) or (isinstance(side, Set) and not side.free_symbols)


def _same_equation(gold_sides: list, answer_sides: list) -> bool:
    """`first = last` of each (a chain's middle steps are working) describe the same solutions: one side minus the
    other is a non-zero constant multiple of the gold's, as `x = 5` and `2x = 10` are."""
    from sympy import simplify

    gold_difference, answer_difference = gold_sides[0] - gold_sides[-1], answer_sides[0] - answer_sides[-1]
    if _zero(gold_difference) or _zero(answer_difference):
        return False
    ratio = simplify(gold_difference / answer_difference)
    return bool(ratio.is_number and ratio.is_finite and not _zero(ratio))


def _is_name(side: Basic) -> bool:
    """`x`, `AB`, `f(2)`: what an equation's value is called, which restates the question rather than answers it."""
    from latex2sympy2_extended import is_expr_of_only_symbols
    from sympy.core.function import AppliedUndef

    return isinstance(side, AppliedUndef) or is_expr_of_only_symbols(side)


def _same_relation(gold: Basic, answer: Basic) -> bool:
    """Inequalities (or an inequality and an interval) compare as the sets of values they allow."""
    gold_set, answer_set = _as_set(gold), _as_set(answer)
    if gold_set is None or answer_set is None:
        return False
    return _same_collection(gold_set, answer_set)


def _as_set(value: Basic) -> Basic | None:
    if not _is_relation(value):
        return value if isinstance(value, Set) else None
    if len(value.free_symbols) != 1:
        return None
    try:
        return value.as_set()
    except Exception:  # sympy cannot solve it: the relation is not comparable as a set
        return None


def _same_collection(gold: Basic, answer: Basic) -> bool:
    gold, answer = _as_collection(gold), _as_collection(answer)
    if isinstance(gold, Interval) and isinstance(answer, Interval):
        return (gold.left_open == answer.left_open and gold.right_open == answer.right_open
                and same_value(gold.start, answer.start) and same_value(gold.end, answer.end))
    if isinstance(gold, Interval) or isinstance(answer, Interval):
        interval, pair = (gold, answer) if isinstance(gold, Interval) else (answer, gold)
        if not (interval.left_open and interval.right_open and isinstance(pair, (FiniteSet, Tuple))):
            return False
        ends = _ordered(pair)
        return len(ends) == 2 and same_value(interval.start, ends[0]) and same_value(interval.end, ends[1])
    if isinstance(gold, FiniteSet) and isinstance(answer, (FiniteSet, Tuple)):
        return _same_elements(list(gold.args), list(answer.args))
    if isinstance(gold, Tuple) and isinstance(answer, (FiniteSet, Tuple)):
        answer_items = _ordered(answer)
        return len(gold) == len(answer_items) and all(same_value(g, a) for g, a in zip(gold, answer_items))
    if isinstance(gold, Set) and isinstance(answer, Set):
        try:
            return gold.symmetric_difference(answer).is_empty is True
        except Exception:  # sympy cannot compare these sets
            return False
    return False


def _as_collection(value: Basic) -> Basic:
    """A lone value as the one-element set it names, so that `5` and `{5}` compare."""
    return value if isinstance(value, (Set, Tuple)) else FiniteSet(value)


def _ordered(items: Basic) -> list:
    """Elements in the order they were written: latex2sympy's sets keep it beside sympy's sorted args."""
    return list(getattr(items, "_unsorted_args", items.args))


def _same_elements(gold: list, answer: list) -> bool:
    """Each gold element matched by its own answer element (equality is transitive, so greedy matching is exact)."""
    if len(gold) != len(answer):
        return False
    remaining = list(answer)
    for element in gold:
        match = next((index for index, candidate in enumerate(remaining) if same_value(element, candidate)), None)
        if match is None:
            return False
        remaining.pop(match)
    return True
