"""The unit-test harness: run one program against a list of tests in one sandboxed process.

`run_tests(sandbox, program, tests)` runs one program against a list of `TestCase`s in
one sandboxed process. A small driver script (the `DRIVER` below, run *inside* the
sandbox) reads the program and the tests, deletes their files (a program cannot read
the tests it is graded on), executes the setup code and the program in a fresh
namespace whose `__name__` is not "__main__" (so an `if __name__ == "__main__":` block
does not run, as in the HumanEval/MBPP harnesses), then runs every test and reports
each outcome on fd 3. A run counts as passed only if the driver itself reaches its end
and reports a nonce it read from stdin before the program ran: a program that calls
`sys.exit(0)` / `os._exit(0)` early is a failure, not a pass.

A `TestCase` is either a statement block (`code`: `assert f(1) == 2`, or HumanEval's
`check(candidate)` block), or an expression to evaluate (`expr`), optionally with an
`expected` expression: the observed value is reported in a canonical form (sets and
dicts sorted, floats to 9 significant digits), which is what behaviour voting
clusters on; with `expected` the test passes when the values are equal (floats within
1e-6 relative). Grading (tasks), the unit-test verifier and behaviour voting all use it.
"""

from __future__ import annotations

import marshal
import secrets
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from ttscale.sandbox.limits import SandboxLimits, SandboxResult, error_reason
from ttscale.sandbox.sandbox import Sandbox

from ttscale.types import Candidate, Problem


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest test class

    code: str | None = None  # statements; pass = no exception
    expr: str | None = None  # an expression whose value is reported
    expected: str | None = None  # with `expr`: an expression the value must equal

    def __post_init__(self) -> None:
        if (self.code is None) == (self.expr is None):
            raise ValueError("a TestCase has exactly one of `code` or `expr`")
        if self.expected is not None and self.expr is None:
            raise ValueError("TestCase.expected needs `expr`")

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("code", self.code), ("expr", self.expr), ("expected", self.expected)) if v is not None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TestCase":
        return cls(code=d.get("code"), expr=d.get("expr"), expected=d.get("expected"))


@dataclass
class TestRun:
    """What running one program against its tests gave."""

    loaded: bool  # setup + program executed without an exception
    passed: int  # tests passed
    total: int
    all_passed: bool  # loaded, every test passed, and the driver finished cleanly
    reason: str | None  # why not (None when all_passed)
    outcomes: list[dict[str, Any]] = field(default_factory=list)  # per test: ok, value, error
    sandbox: SandboxResult | None = None

    @property
    def fraction(self) -> float:
        return self.passed / self.total if self.total else 0.0

    def values(self) -> tuple[str, ...]:
        """The observed behaviour: per test the canonical value or the exception type."""
        out = []
        for o in self.outcomes:
            if o.get("error"):
                out.append("!" + str(o["error"]))
            else:
                out.append(str(o.get("value", "")))
        return tuple(out)


# The harness that runs inside the sandbox (its own process; never imported here).
DRIVER = r'''
import builtins, marshal, math, os, sys

def _jstr(s):
    out = []
    for ch in s:
        o = ord(ch)
        if ch == '"' or ch == "\\":
            out.append("\\" + ch)
        elif o < 0x20 or 0xD800 <= o <= 0xDFFF:
            out.append("\\u%04x" % o)
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'

def _report(obj):
    # One JSON line on fd 3 (values: str / int / bool / None); no json import, start-up is per run.
    parts = []
    for k, v in obj.items():
        if v is None:
            v = "null"
        elif v is True or v is False:
            v = "true" if v else "false"
        elif type(v) is int:
            v = str(v)
        else:
            v = _jstr(str(v))
        parts.append(_jstr(k) + ":" + v)
    try:
        os.write(3, ("{" + ",".join(parts) + "}\n").encode("utf-8", "replace"))
    except Exception:
        pass

_nonce = sys.stdin.readline().strip()
with open("program.py", encoding="utf-8") as _f:
    _program = _f.read()
with open("tests.bin", "rb") as _f:
    _spec = marshal.loads(_f.read())
os.unlink("program.py")
os.unlink("tests.bin")

def _canon(v, depth=0):
    if depth > 12:
        return "..."
    if v is None or isinstance(v, bool):
        return repr(v)
    if isinstance(v, int):
        s = str(v)
        return s if len(s) < 200 else "int:" + s[:40] + "...%d" % len(s)
    if isinstance(v, float):
        return format(v, ".9g")
    if isinstance(v, complex):
        return "complex(%s,%s)" % (format(v.real, ".9g"), format(v.imag, ".9g"))
    if isinstance(v, (str, bytes)):
        return repr(v[:2000]) + ("...%d" % len(v) if len(v) > 2000 else "")
    if isinstance(v, (list, tuple)):
        items = ",".join(_canon(x, depth + 1) for x in v[:1000])
        more = "...%d" % len(v) if len(v) > 1000 else ""
        if isinstance(v, tuple) and len(v) == 1:
            items += ","
        return ("[%s%s]" if isinstance(v, list) else "(%s%s)") % (items, more)
    if isinstance(v, (set, frozenset)):
        return "{%s}" % ",".join(sorted(_canon(x, depth + 1) for x in list(v)[:1000]))
    if isinstance(v, dict):
        return "{%s}" % ",".join(sorted(_canon(k, depth + 1) + ":" + _canon(x, depth + 1)
                                        for k, x in list(v.items())[:1000]))
    r = repr(v)
    return "<%s>" % type(v).__name__ if " at 0x" in r else r[:2000]

def _equal(a, b):
    if isinstance(a, float) or isinstance(b, float):
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
                and not isinstance(a, bool) and not isinstance(b, bool):
            return a == b or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and type(a) is type(b):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return bool(a == b)

def _err(e):
    return {"error": type(e).__name__, "message": str(e)[:300]}

_ns = {"__name__": "__solution__", "__builtins__": builtins}
try:
    if _spec["setup"]:
        exec(compile(_spec["setup"], "setup.py", "exec"), _ns)
    exec(compile(_program, "program.py", "exec"), _ns)
except BaseException as e:
    sys.__excepthook__(type(e), e, e.__traceback__)
    _report(dict(load=False, **_err(e)))
    sys.stderr.flush()
    os._exit(1)
_report({"load": True})
_passed = 0
for _i, _t in enumerate(_spec["tests"]):
    _out = {"i": _i}
    try:
        if "expr" in _t:
            _v = eval(compile(_t["expr"], "test_%d.py" % _i, "eval"), _ns)
            _out["value"] = _canon(_v)
            if "expected" in _t:
                _e = eval(compile(_t["expected"], "expected_%d.py" % _i, "eval"), _ns)
                _out["ok"] = _equal(_v, _e)
                if not _out["ok"]:
                    _out.update(error="AssertionError", message="got %s, expected %s" % (_out["value"][:200], _canon(_e)[:200]))
            else:
                _out["ok"] = True
        else:
            exec(compile(_t["code"], "test_%d.py" % _i, "exec"), _ns)
            _out["ok"] = True
    except BaseException as e:
        sys.__excepthook__(type(e), e, e.__traceback__)
        _out.update(ok=False, **_err(e))
    _passed += bool(_out["ok"])
    _report(_out)
    if not _out["ok"] and _spec["stop_on_failure"]:
        break
try:
    sys.stdout.flush()
    sys.stderr.flush()
except Exception:
    pass
_report({"done": _nonce, "passed": _passed})
os._exit(0 if _passed == len(_spec["tests"]) else 1)
'''


async def run_tests(
    sandbox: Sandbox,
    program: str,
    tests: Sequence[TestCase],
    setup: str = "",
    stop_on_failure: bool = False,
    limits: SandboxLimits | None = None,
) -> TestRun:
    """Run `program` against `tests` in one sandboxed process (see module doc)."""
    nonce = secrets.token_hex(16)
    spec = {"setup": setup or "", "tests": [t.to_dict() for t in tests], "stop_on_failure": stop_on_failure}
    res = await sandbox.run(
        DRIVER,
        files={"program.py": program, "tests.bin": marshal.dumps(spec)},
        stdin=(nonce + "\n").encode(),
        limits=limits,
    )
    return interpret(res, len(tests), nonce)


def interpret(res: SandboxResult, total: int, nonce: str) -> TestRun:
    """A TestRun from the driver's report lines and the process outcome."""
    load = next((r for r in res.report if "load" in r), None)
    outcomes: dict[int, dict[str, Any]] = {}
    for r in res.report:
        i = r.get("i")
        if isinstance(i, int) and 0 <= i < total and i not in outcomes:
            outcomes[i] = r
    done = any(r.get("done") == nonce for r in res.report)
    loaded = bool(load and load.get("load"))
    passed = sum(1 for o in outcomes.values() if o.get("ok") is True)
    ordered = [outcomes[i] for i in sorted(outcomes)]
    all_passed = loaded and done and passed == total and res.exit_code == 0 and not res.timed_out
    reason: str | None = None
    if not all_passed:
        if res.timed_out or res.reason in ("timeout", "output_limit", "killed", "memory"):
            reason = res.reason
        elif load is not None and not loaded:
            reason = error_reason(load.get("error", ""), load.get("message", ""))
        else:
            failed = next((o for o in ordered if not o.get("ok")), None)
            if failed is not None:
                reason = error_reason(failed.get("error", ""), failed.get("message", ""))
            elif not done:
                reason = f"error: exited before the tests finished (exit code {res.exit_code})"
            else:
                reason = res.reason or "error: not all tests ran"
    return TestRun(
        loaded=loaded, passed=passed, total=total, all_passed=all_passed, reason=reason,
        outcomes=ordered, sandbox=res,
    )


def public_tests(problem: Problem) -> tuple[list[TestCase], str]:
    """The visible tests of a code problem (`problem.meta["public_tests"]`) and their setup."""
    tests = [TestCase.from_dict(t) for t in problem.meta.get("public_tests", [])]
    return tests, problem.meta.get("test_setup", "") or ""


def assemble_programs(task: Any, problem: Problem, candidates: Sequence[Candidate]) -> None:
    """Re-extract each candidate's program with the problem at hand (`task.answer_for`,
    when the task has it): a HumanEval answer that is only a function body becomes a
    program with the prompt's signature only once the prompt is known."""
    for c in candidates:
        if c.text:
            c.answer = task.answer_for(problem, c.text)
