"""A number followed by unit words is the number: `9 eggs` -> `9`, `18 dollars` -> `18`.

math-verify reads `9 eggs` as the product 9*e*g*g*s (it drops units only inside
`\\text{}`), so "The answer is 9 eggs." was graded wrong on GSM8K and MATH while
"5 cm" passed by luck. `strip_units` runs in the answer normal form before
math-verify (`tasks.answers.answer_key` and the text math-verify parses), on the
reference answer and the prediction alike.

Only the whole answer `<number> <words>` is rewritten, where the words (one to four)
are plain letters (`cm`, `people's`, `ice-cream`, `km/h`, `cm^2`, `sq. ft`) and the number is a
plain, money (`$18`, `\\$18`), thousands (`1,200`), decimal or `a/b` number. Left as
they are (graded as before):

* anything with LaTeX or a second number: `\\frac{1}{2}`, `3\\sqrt{2}`, `x = 5`,
  `2 and 3`, `5 hours 15 minutes`;
* a word that is mathematics or scale, not a unit: `2 pi`, `3 sqrt 2`, `5 log 2`,
  `2 million`, `3 dozen`, `1 half`, `5 choose 2`;
* a single letter (`5 x`, `3 i`: a variable or the imaginary unit);
* a time of day (`10 a.m.`, `4 PM`): the word changes the answer.
"""

from __future__ import annotations

import re

_NUM = r"-?(?:\\?\$\s*)?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+)?|\.\d+)"
_WORD = r"[A-Za-z](?:[A-Za-z'\-]*[A-Za-z])?\.?(?:\^\{?\d\}?)?"
# at most four words ("18 dollars per hour"): a longer phrase is a sentence, not a unit
_NUMBER_UNITS = re.compile(rf"^(?P<num>{_NUM})\s*(?P<units>{_WORD}(?:\s*(?:/|\s)\s*{_WORD}){{0,3}})$")

# Words after a number that are not units: they change the value (or make it an expression).
NOT_UNITS = frozenset(
    """
    pi sqrt root infty inf infinity e i sin cos tan cot sec csc arcsin arccos arctan log ln exp mod choose
    hundred hundreds thousand thousands million millions billion billions trillion trillions
    dozen dozens half halves quarter quarters third thirds score
    am pm a.m p.m noon midnight o'clock bc ad bce ce
    """.split()
)


def strip_units(ans: str) -> str:
    """`'9 eggs'` -> `'9'`, `'$18 per hour'` -> `'$18'`, `'5 cm^2'` -> `'5'`; anything
    else unchanged (see the module docstring for what is left alone)."""
    s = ans.strip()
    m = _NUMBER_UNITS.match(s)
    if not m:
        return ans
    units = m.group("units")
    first = re.split(r"[\s/^]", units, maxsplit=1)[0].rstrip(".").lower()
    if len(first) < 2 or first in NOT_UNITS or units.lower().rstrip(".") in NOT_UNITS:
        return ans
    return re.sub(r"^(-?)\$\s*", r"\1", m.group("num").strip())  # a bare "$" would end $...$
