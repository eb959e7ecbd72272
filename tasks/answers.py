"""Final-answer extraction, normalisation and math equivalence (math-verify).

Three layers, each usable on its own:

* **extraction** -- `extract_answer(text, fallbacks)`: the last `\\boxed{...}`
  (or `\\fbox` / `\\framebox`) with balanced braces, else "The answer is X",
  else GSM8K's "#### X", else (when asked for) the last number in the text.
* **normal form** -- `answer_key(answer)`: a cheap canonical string (LaTeX
  spacing, `\\left`/`\\right`, `\\dfrac`, degrees, `\\text{}`, thousands
  separators and `3.0` -> `3` removed; a number followed by unit words is the
  number, `tasks.units.strip_units`) used to group equal answers quickly.
* **equivalence** -- `math_equal(gold, pred)` / `equivalent(a, b)`: the normal
  form first, then math-verify (`parse` + `verify`), so `1/2`, `0.5` and
  `\\frac12` agree, sets and intervals compare as such.

Timeouts. math-verify guards parsing and comparison with `signal.alarm`, which
only works in the main thread. `timeouts_available()` decides per call: in the
main thread (also inside a running asyncio loop, whose callbacks run there) the
configured timeout is passed through; in any other thread math-verify is called
with `parsing_timeout=None` / `timeout_seconds=None` (no signals, so it cannot
crash), and pathological inputs are kept out instead by `max_answer_chars`:
longer answers are compared by their normal form only. Every exception inside
math-verify (and its `TimeoutException`, a BaseException) counts as "not equal".
"""

from __future__ import annotations

import logging
import re
import threading
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Sequence

from ttscale.tasks.units import strip_units

log = logging.getLogger(__name__)

BOX_COMMANDS = ("\\boxed", "\\fbox", "\\framebox")
# Methods that read an answer the solution states as its answer (a box, "The answer is X",
# GSM8K's "#### X"), and those that read any number in the text (lenient: an echo of the
# question gets an answer; the math tasks use them only when asked, `task.answer_fallback`).
EXPLICIT = ("boxed", "answer_is", "hash")
ANY_NUMBER = ("last_number",)
FALLBACKS = EXPLICIT + ANY_NUMBER
DEFAULT_TIMEOUT_S = 5
DEFAULT_MAX_ANSWER_CHARS = 512

# ---------------------------------------------------------------- extraction


def _braced(text: str, start: int) -> tuple[str, int] | None:
    """Content of the balanced `{...}` group opening at `text[start]`, and the index after it."""
    if start >= len(text) or text[start] != "{":
        return None
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "\\":  # an escaped brace (\{ \}) does not open or close a group
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i], i + 1
        i += 1
    return None  # unbalanced: truncated output


_BOX_RE = re.compile(r"\\(?:boxed|fbox|framebox)(?![A-Za-z])")


def boxed_all(text: str) -> list[str]:
    """Contents of every complete `\\boxed{}`/`\\fbox{}`/`\\framebox{}` in order.

    `\\boxed 5` (no braces, as some MATH solutions write it) gives `5`. A box whose
    braces never close (a truncated generation) is skipped.
    """
    out: list[str] = []
    for m in _BOX_RE.finditer(text):
        i = m.end()
        if text.startswith("[", i):  # \framebox[width]{...}
            close = text.find("]", i)
            if close < 0:
                continue
            i = close + 1
        j = i
        while j < len(text) and text[j] in " \t":
            j += 1
        got = _braced(text, j)
        if got is not None:
            out.append(got[0].strip())
        elif j > i and j < len(text):  # "\boxed 5": one token after a space
            tok = re.match(r"[^\s$]+", text[j:])
            if tok:
                out.append(tok.group(0).rstrip(".,"))
    return out


def last_boxed(text: str) -> str | None:
    boxes = boxed_all(text)
    return boxes[-1] if boxes else None


# "The answer is X", "Final answer: X", "answer = X" (the last one in the text wins).
_ANSWER_IS_RE = re.compile(r"\banswer\s*(?:is\b|:|=)\s*:?\s*(?P<ans>[^\n]+)", re.IGNORECASE)
_HASH_RE = re.compile(r"####\s*(?P<ans>[^\n]+)")
_NUMBER_RE = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|(?<![\w.])-?\.\d+")


def _clip_sentence(ans: str) -> str:
    """The answer phrase up to the end of its sentence (a period followed by space/end)."""
    ans = ans.strip()
    if ans.startswith("$"):
        close = ans.find("$", 1)
        if close > 0:
            return ans[: close + 1]
    m = re.search(r"\.(?:\s|$)", ans)
    if m:
        ans = ans[: m.start()]
    return ans.strip()


def last_number(text: str) -> str | None:
    nums = _NUMBER_RE.findall(text)
    return nums[-1] if nums else None


def extract_answer(text: str | None, fallbacks: Sequence[str] = ("boxed", "answer_is", "hash")) -> str | None:
    """The final answer in a solution, by the first method in `fallbacks` that finds one.

    Methods: `boxed` (last complete box), `answer_is` (the last "The answer is X" /
    "Final answer: X"), `hash` (GSM8K's "#### X"), `last_number`.
    """
    if not text:
        return None
    for how in fallbacks:
        if how == "boxed":
            ans = last_boxed(text)
        elif how == "answer_is":
            found = list(_ANSWER_IS_RE.finditer(text))
            ans = None
            if found:
                phrase = found[-1].group("ans")
                ans = last_boxed(phrase) or _clip_sentence(phrase)
        elif how == "hash":
            found = list(_HASH_RE.finditer(text))
            ans = found[-1].group("ans") if found else None
        elif how == "last_number":
            ans = last_number(text)
        else:
            raise ValueError(f"unknown answer extraction method {how!r}; choose from {FALLBACKS}")
        ans = clean_answer(ans) if ans is not None else None
        if ans:
            return ans
    return None


def clean_answer(ans: str) -> str:
    """Strip what surrounds an answer: whitespace, `$...$`, `\\(...\\)`, a final period."""
    ans = ans.strip()
    for _ in range(3):
        before = ans
        if len(ans) >= 2 and ans.startswith("$") and ans.endswith("$"):
            ans = ans.strip("$").strip()
        if ans.startswith("\\(") and ans.endswith("\\)"):
            ans = ans[2:-2].strip()
        if ans.startswith("\\[") and ans.endswith("\\]"):
            ans = ans[2:-2].strip()
        ans = ans.rstrip(".").rstrip()
        if ans == before:
            break
    return ans


# ------------------------------------------------------------- normal form

_TEXT_RE = re.compile(r"\\(?:text|textbf|mathrm|mbox|textnormal)\s*\{([^{}]*)\}")
_THOUSANDS_RE = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_PLAIN_NUMBER_RE = re.compile(r"^-?(?:\d+(?:\.\d*)?|\.\d+)$")
_SPACING = ("\\!", "\\,", "\\;", "\\:", "\\ ", "~", "\\quad", "\\qquad")


def strip_latex_noise(ans: str) -> str:
    """Remove LaTeX that never changes an answer's value (spacing, sizing, `\\dfrac`)."""
    s = ans
    for sp in _SPACING:
        s = s.replace(sp, "")
    s = s.replace("\\left", "").replace("\\right", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("\\displaystyle", "")
    s = re.sub(r"\^\s*\{?\\circ\}?", "", s)  # degrees
    s = s.replace("\\circ", "")
    s = s.replace("\\%", "").replace("%", "")
    s = s.replace("\\$", "").replace("$", "")
    return s.strip()


def canonical_number(s: str) -> str | None:
    """`'1,000'` -> `'1000'`, `'3.50'` -> `'3.5'`, `'(073)'` -> `'73'`; None when `s` is not a plain number."""
    t = s.replace(" ", "")
    if t.startswith("(") and t.endswith(")"):  # "(073)", as in "\textbf{(073)}"
        t = t[1:-1]
    if _THOUSANDS_RE.match(t):
        t = t.replace(",", "")
    if not _PLAIN_NUMBER_RE.match(t):
        return None
    try:
        d = Decimal(t)
    except InvalidOperation:
        return None
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def answer_key(ans: str) -> str:
    """A cheap canonical string: equal keys mean equal answers (the converse needs math-verify)."""
    s = strip_latex_noise(clean_answer(ans))
    # \text{Evelyn} -> Evelyn; "5.4 \text{ cents}" -> "5.4 cents" -> "5.4" (unit words dropped).
    s = _TEXT_RE.sub(lambda m: m.group(1), s)
    s = strip_units(s)  # "9 eggs" -> "9" (math-verify would read 9*e*g*g*s)
    s = "".join(s.split())
    num = canonical_number(s)
    return num if num is not None else s


def number_str(x: float) -> str:
    """`55.0` -> `'55'`, `2.5` -> `'2.5'`."""
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def to_number(ans: str | None) -> float | None:
    """The one number an answer states (`'$1,200.'`, `'38 apples'`, `'\\boxed{-7}'`,
    `'38 + 17 = 55'`: the right-hand side of the last `=`), else None."""
    if ans is None:
        return None
    s = strip_latex_noise(clean_answer(last_boxed(ans) or ans))
    s = s.rsplit("=", 1)[-1]
    s = _TEXT_RE.sub(lambda m: " " + m.group(1), s)
    nums = _NUMBER_RE.findall(s)
    if len(nums) != 1:
        return None
    tok = nums[0].replace(",", "")
    try:
        if "/" in tok:
            a, b = tok.split("/")
            return float(a) / float(b) if float(b) != 0 else None
        return float(tok)
    except ValueError:
        return None


# ------------------------------------------------------------- equivalence


def timeouts_available() -> bool:
    """Whether math-verify's signal-based timeouts can be used from this thread."""
    return threading.current_thread() is threading.main_thread()


def _wrap(ans: str) -> str:
    """Present an answer to math-verify's LaTeX extractor: inside `$...$` (not `\\boxed{}`:
    math-verify parses `$70\\%$` but not `\\boxed{70\\%}`)."""
    s = clean_answer(ans)
    if "\\boxed" in s or "\\fbox" in s:
        return s
    s = strip_units(s)
    num = canonical_number(s)
    return f"${num if num is not None else s}$"


@lru_cache(maxsize=8192)
def _parse(ans: str, timeout_s: int | None) -> tuple:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    try:
        return tuple(
            parse(
                _wrap(ans),
                extraction_config=[LatexExtractionConfig(), ExprExtractionConfig()],
                parsing_timeout=timeout_s,  # type: ignore[arg-type]
            )
        )
    except BaseException as e:  # noqa: BLE001 -- TimeoutException is a BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        log.debug("math-verify could not parse %r: %r", ans, e)
        return ()


def _verify(gold: tuple, pred: tuple, timeout_s: int | None) -> bool:
    from math_verify import verify

    if not gold or not pred:
        return False
    try:
        return bool(verify(list(gold), list(pred), timeout_seconds=timeout_s))  # type: ignore[arg-type]
    except BaseException as e:  # noqa: BLE001
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        log.debug("math-verify could not compare: %r", e)
        return False


def math_equal(
    gold: str | None,
    pred: str | None,
    *,
    timeout_s: int | None = DEFAULT_TIMEOUT_S,
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
) -> bool:
    """Whether `pred` states the reference answer `gold` (asymmetric, as math-verify is:
    `gold` may be `x=5` and `pred` `5`)."""
    if gold is None or pred is None:
        return False
    if answer_key(gold) == answer_key(pred):
        return True
    if len(gold) > max_answer_chars or len(pred) > max_answer_chars:
        return False
    t = timeout_s if timeouts_available() else None
    return _verify(_parse(gold, t), _parse(pred, t), t)


def equivalent(
    a: str,
    b: str,
    *,
    timeout_s: int | None = DEFAULT_TIMEOUT_S,
    max_answer_chars: int = DEFAULT_MAX_ANSWER_CHARS,
) -> bool:
    """Symmetric equivalence of two predicted answers (for voting)."""
    kw = dict(timeout_s=timeout_s, max_answer_chars=max_answer_chars)
    return math_equal(a, b, **kw) or math_equal(b, a, **kw)


def numbers_equal(a: float | None, b: float | None, rel_tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return False
    return abs(a - b) <= rel_tol * max(1.0, abs(a), abs(b))

