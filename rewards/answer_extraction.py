"""Find the final answer in a completion or a reference solution.

Every search here is linear in the text (`rfind`, brace matching, regexes over a bounded tail), so a megabyte
completion costs milliseconds in the calling process; the expensive symbolic work happens later, in a bounded worker.
"""

from __future__ import annotations

import re
from fractions import Fraction

# A stated final answer sits at the end of a completion; searching only the tail keeps long texts cheap.
_TAIL_CHARS = 2000
_STATED = re.compile(r"(?i)(?:final answer|answer)\s*(?:is|:|=)\s*[:\-]?\s*(?P<answer>[^\n]{1,300})")
_HASHES = re.compile(r"####\s*(?P<answer>[^\n]{1,300})")
_SENTENCE_END = re.compile(r"\.\s")
_TRAILING_WORDS = re.compile(r"^(?P<math>.*?[\d}])\s+[A-Za-z][A-Za-z .]*$")
_PLAIN_NUMBER = re.compile(r"^[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?$")
_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"))


def last_boxed(text: str) -> str | None:
    r"""The content of the last `\boxed{...}` (or `\fbox{...}`) in `text`, braces matched; None if there is none.

    >>> last_boxed(r"first \boxed{1}, then \boxed{\frac{1}{2}}.")
    '\\frac{1}{2}'
    """
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    start = text.index("{", start) + 1
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i].strip()
    return None


def _clean(answer: str) -> str:
    """Strip math delimiters, bold markers, a trailing full stop, currency and trailing unit words."""
    answer = answer.strip()
    changed = True
    while changed:
        changed = False
        for left, right in _WRAPPERS:
            if len(answer) > len(left) + len(right) and answer.startswith(left) and answer.endswith(right):
                answer, changed = answer[len(left) : -len(right)].strip(), True
        if answer.endswith(".") and not answer[:-1].endswith("."):
            answer, changed = answer[:-1].rstrip(), True
    answer = answer.lstrip("$").replace("\\$", "").strip()
    boxed = last_boxed(answer)
    if boxed is not None:
        return boxed
    words = _TRAILING_WORDS.match(answer)
    return words.group("math") if words and "\\" not in answer else answer


def final_answer(text: str) -> str | None:
    r"""The final answer stated in a completion: the last `\boxed{}`, else the last `#### x`, else the last
    "answer is x" / "answer: x"; a short bare answer (one line, at most 40 characters) counts as itself.

    Only the text after the last `</think>` is searched when there is one.

    >>> final_answer(r"<think>maybe \boxed{41}</think> The answer is \boxed{42}.")
    '42'
    >>> final_answer("Adding them up gives 18.\n#### 18")
    '18'
    >>> final_answer("So the final answer is $\\frac{3}{4}$.")
    '\\frac{3}{4}'
    >>> final_answer("I am not sure.") is None
    True
    """
    text = text.rpartition("</think>")[2]
    boxed = last_boxed(text)
    if boxed is not None:
        return normalize_number(boxed)
    tail = text[-_TAIL_CHARS:]
    for pattern in (_HASHES, _STATED):
        matches = list(pattern.finditer(tail))
        if matches:
            # The answer's sentence ends at the first full stop followed by a space ("42. I hope it is correct").
            sentence = _SENTENCE_END.split(matches[-1].group("answer"), maxsplit=1)[0]
            return normalize_number(_clean(sentence))
    bare = text.strip()
    if bare and len(bare) <= 40 and "\n" not in bare and " " not in _clean(bare):
        return normalize_number(_clean(bare))
    return None


def gold_answer(solution: str) -> str | None:
    r"""The gold answer in a `solution` column: a `\boxed{}` answer, the `#### x` of a GSM8K reference
    solution, a stated final answer, or else the whole (stripped) text; None when it is empty.

    >>> gold_answer("Janet sells 9 eggs.\n#### 1,080")
    '1080'
    >>> gold_answer(r"\dfrac{3}{4}")
    '\\dfrac{3}{4}'
    """
    solution = solution.strip()
    if not solution:
        return None
    found = final_answer(solution)
    return found if found is not None else normalize_number(_clean(solution))


def normalize_number(answer: str) -> str:
    """Drop thousands separators from a plain number ("1,080" -> "1080"); leave anything else unchanged.

    >>> normalize_number("1,080"), normalize_number("1,2")
    ('1080', '1,2')
    """
    return answer.replace(",", "") if _PLAIN_NUMBER.match(answer) and "," in answer else answer


def as_number(answer: str) -> Fraction | None:
    """The exact value of a plain decimal number string, else None.

    >>> as_number("0.50"), as_number("x")
    (Fraction(1, 2), None)
    """
    return Fraction(answer) if _PLAIN_NUMBER.match(answer) and "," not in answer else None
