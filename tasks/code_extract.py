"""The program in a code completion.

Fenced ```python blocks (all of them, in order; later definitions win), else bare code;
with `sanitize` on, top-level example usage (prints, asserts, calls of the program's own
functions, `if __name__ == "__main__":` blocks) is dropped, so a correct function is not
failed by the model's own demo code. For HumanEval the program is completed with the
prompt: a full function gets the prompt's imports and helper functions in front; a bare
function body is appended to the prompt (the signature and docstring as given).
"""

from __future__ import annotations

import ast
import re
import textwrap

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
