"""Public tests mined from a problem's own text: the examples in a HumanEval docstring
(`>>> f(x)` followed by its output, and the `f(x) ==> y`, `f(x) -> y`, `f(x) == y`,
`f(x) ➞ y`, "f(x) should return y" forms), kept only where the call arguments and the
expected value are plain literals; MBPP's entry point from its asserts."""

from __future__ import annotations

import ast
import builtins
import re

from ttscale.sandbox.harness import TestCase

_SEPARATORS = re.compile(
    r"^\s*(?:#\s*)?(?:==>|=>|==|->|➞|=|should\s+return|returns?|is|gives?|:)\s*", re.I
)


_ALLOWED = (
    ast.Expression, ast.Constant, ast.List, ast.Tuple, ast.Set, ast.Dict, ast.UnaryOp, ast.BinOp,
    ast.USub, ast.UAdd, ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod, ast.Pow, ast.Load,
)


def _literal(src: str) -> bool:
    """Whether `src` is an expression made only of literals (and arithmetic on them)."""
    try:
        tree = ast.parse(src.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    return all(isinstance(n, _ALLOWED) for n in ast.walk(tree))


_WRAPPERS = frozenset({"round", "abs", "sorted", "len", "list", "tuple", "set", "str", "int", "float", "sum", "min", "max"})


def _literal_call(src: str, entry_point: str) -> bool:
    """Whether `src` calls `entry_point` on literal arguments (possibly wrapped in a
    builtin such as `round(...)`) and does nothing else."""
    try:
        tree = ast.parse(src.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return False
    names = _WRAPPERS | {entry_point}
    calls_entry = False
    for n in ast.walk(tree):
        if isinstance(n, ast.Call):
            if not isinstance(n.func, ast.Name) or n.func.id not in names:
                return False
            if any(isinstance(a, ast.Starred) for a in n.args) or any(k.arg is None for k in n.keywords):
                return False
            calls_entry |= n.func.id == entry_point
        elif isinstance(n, ast.Name):
            if n.id not in names:
                return False
        elif not isinstance(n, _ALLOWED + (ast.keyword,)):
            return False
    return calls_entry


def _balanced_end(s: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at `start` (quotes respected)."""
    depth, quote, i = 0, None, start
    while i < len(s):
        ch = s[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    return None


def _expected_value(rest: str, separator_required: bool = True) -> str | None:
    rest = rest.strip()
    if not rest:
        return None
    m = _SEPARATORS.match(rest)
    if m is None:
        if separator_required:
            return None
        m = re.match(r"", rest)
    rest = rest[m.end():].strip()
    tries = [rest, rest.rstrip(".")]
    for cut in (" #", " (", ". "):
        if cut in rest:
            tries.append(rest.split(cut, 1)[0].strip().rstrip("."))
    if " = " in rest:  # "1 + 9 + 0 + 0 = 10": the value is the last part
        tries.append(rest.rsplit(" = ", 1)[1].strip().rstrip("."))
    low = {"true": "True", "false": "False", "none": "None"}
    for t in tries:
        t = t.strip()
        t = low.get(t.lower(), t)
        if t and _literal(t):
            return t
    return None


def docstring_examples(prompt: str, entry_point: str) -> list[TestCase]:
    """Input/output examples from a HumanEval prompt, as expression tests."""
    lines = prompt.splitlines()
    out: list[TestCase] = []
    seen: set[str] = set()

    def add(expr: str, expected: str | None) -> None:
        if expected is None or not _literal_call(expr, entry_point):
            return
        expr = ast.unparse(ast.parse(expr.strip(), mode="eval"))  # comments and spacing go
        if expr in seen:
            return
        seen.add(expr)
        out.append(TestCase(expr=expr, expected=expected))

    i = 0
    while i < len(lines):
        s = lines[i].strip()
        if s.startswith(">>>"):
            expr = s[3:].strip()
            j = i + 1
            while j < len(lines) and lines[j].strip().startswith("..."):
                expr += "\n" + lines[j].strip()[3:].strip()
                j += 1
            outs = []
            while j < len(lines):
                t = lines[j].strip()
                if not t or t.startswith(">>>") or t.startswith('"""') or t.startswith("'''"):
                    break
                outs.append(t.rstrip('"').rstrip("'") if t.endswith('"""') or t.endswith("'''") else t)
                if t.endswith('"""') or t.endswith("'''"):
                    break
                j += 1
            expected = " ".join(outs).strip()
            cmp = _equality(expr)
            if cmp is not None:  # ">>> f(x) == y"
                add(*cmp)
            elif expected:
                add(expr, expected if _literal(expected) else None)
            else:  # ">>> f(x) y": the value on the same line
                k = _find_call(expr, entry_point)
                end = _balanced_end(expr, expr.index("(", k)) if k is not None else None
                if end is not None:
                    add(expr[k:end], _expected_value(expr[end:], separator_required=False))
            i = max(j, i + 1)
            continue
        k = _find_call(s, entry_point)
        if k is not None:
            joined, n = s, 0
            end = _balanced_end(joined, joined.index("(", k))
            while end is None and n < 8 and i + n + 1 < len(lines):  # a call spread over lines
                n += 1
                joined += " " + lines[i + n].strip()
                end = _balanced_end(joined, joined.index("(", k))
            if end is not None:
                add(joined[k:end], _expected_value(joined[end:]))
                i += n
        i += 1
    return out


def _equality(src: str) -> tuple[str, str] | None:
    """(left, right) of an expression `left == right` whose right side is a literal."""
    try:
        tree = ast.parse(src.strip(), mode="eval")
    except (SyntaxError, ValueError):
        return None
    c = tree.body
    if isinstance(c, ast.Compare) and len(c.ops) == 1 and isinstance(c.ops[0], ast.Eq):
        right = ast.unparse(c.comparators[0])
        if _literal(right):
            return ast.unparse(c.left), right
    return None


def _find_call(line: str, name: str) -> int | None:
    for m in re.finditer(re.escape(name) + r"\s*\(", line):
        k = m.start()
        if k > 0 and (line[k - 1].isalnum() or line[k - 1] in "_."):
            continue
        if line[:k].rstrip().endswith("def"):
            continue
        return k
    return None


def _entry_calls(test: str, entry_point: str) -> list[str]:
    """Source of each call of `entry_point` in a test (the inputs a test exercises)."""
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError):
        return []
    return [
        ast.unparse(n)
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == entry_point
    ]


def _mbpp_entry_point(test: str, code: str | None) -> str | None:
    """The function an MBPP test calls (the first non-builtin name called)."""
    try:
        tree = ast.parse(test)
    except (SyntaxError, ValueError):
        tree = None
    if tree is not None:
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
        calls.sort(key=lambda n: (n.lineno, n.col_offset))
        for n in calls:
            if not hasattr(builtins, n.func.id):
                return n.func.id
    m = re.search(r"^def\s+(\w+)", code or "", re.M)
    return m.group(1) if m else None
