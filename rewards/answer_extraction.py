"""What math-verify is given to read, and the answers that need no reading.

math-verify (`math_verify.parse`) finds and parses the final answer, in a bounded worker (`math_accuracy`). This
module is the cheap part in the caller: it cuts a completion down to the text that may hold its final answer
(our policy: after `</think>`, the last `_TAIL_CHARS` characters, a marked answer required), hands a bare-LaTeX gold
to math-verify in math delimiters, and reads plain numbers where math-verify's reading is certain, so they need
no round trip. `stated_text` reads answers that are no math (the `text` reward). Every function here is a few
linear passes over a bounded text.
"""

from __future__ import annotations

import re
from fractions import Fraction

# The final answer sits at the end; reading only the tail keeps long and degenerate texts cheap.
_TAIL_CHARS = 2000
# GSM8K marks its final answer `#### x`; math-verify knows no such anchor, but reads "The final answer is x".
_HASHES = re.compile(r"####[ \t]*")
_FINAL = "The final answer is "
# Markdown bold (`**42**`): math-verify reads `42**.` as an expression that does not parse. A `**` between two
# operands (`2**3`) is a power and stays.
_BOLD = re.compile(r"(?<![\w)])\*\*|\*\*(?![\w(])")
# An English word (three letters or more) that is not a LaTeX command or a command's argument (`\text{east}`).
_WORD = re.compile(r"(?<![\\{A-Za-z])[A-Za-z]{3,}")
_MATH_START = re.compile(r"[\d$\\]")
# Without a digit, a backslash, a dollar or a bracket none of math-verify's patterns can match.
_MATH_LIKE = re.compile(r"[\d\\$\[]")
_ANSWER_ONLY_CHARS = 100
_DELIMITED = re.compile(r"\$|\\\(|\\\[|\\boxed|(?i:answer)")

# A plain number as math-verify reads it: an integer or decimal, thousands separated by commas or not. A comma
# followed by other than three digits is a decimal comma ("0,111"): not plain, math-verify reads it.
_PLAIN = r"-?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)(?:\.\d+)?"
# A text ending in a plain number, perhaps in math delimiters and `\boxed{}`, then only full stops and spaces.
# `mark` is an answer phrase right before it ("The final answer is", "Answer:").
_ENDING = re.compile(
    r"(?P<mark>(?i:(?:final\s+)?answer(?:\s+is)?)[\s:=]*)?(?<![\w.,])(?P<open>\$\$|\$|\\\[|\\\()?\s*"
    rf"(?P<box>\\boxed\{{\s*)?(?P<number>{_PLAIN})(?(box)\s*\}})\s*+(?P<close>\$\$|\$|\\\]|\\\))?[\s.]*+\Z"
)
_CLOSING = {None: None, "$": "$", "$$": "$$", "\\[": "\\]", "\\(": "\\)"}
# For answers that are no math: the rest of the line after an answer phrase.
_STATED = re.compile(r"(?i)answer(?:\s+is)?\s*[:=]?\s*(?P<answer>[^\n]*)")


def answer_region(text: str) -> str:
    r"""The part of a completion (or solution) that may hold its final answer: the text after the last
    `</think>`, at most its last `_TAIL_CHARS` characters, with GSM8K's `#### x` written as a final answer and
    Markdown bold markers removed.

    >>> answer_region("<think>maybe 41</think>Adding up.\n#### 42"), answer_region("The answer is **2**3**.")
    ('Adding up.\nThe final answer is 42', 'The answer is 2**3.')
    """
    region = text.rpartition("</think>")[2][-_TAIL_CHARS:]
    if "####" in region:
        region = _HASHES.sub(_FINAL, region)
    return (_BOLD.sub("", region) if "**" in region else region).strip()


def is_answer_only(region: str) -> bool:
    r"""Whether `region` is only an answer: one line of at most 100 characters with no word before its math.

    >>> is_answer_only(r"$k = \frac{1}{3}$"), is_answer_only("28 %"), is_answer_only("I think 42")
    (True, True, False)
    """
    if not region or "\n" in region or len(region) > _ANSWER_ONLY_CHARS:
        return False
    return not _WORD.search(_MATH_START.split(region, maxsplit=1)[0])


def states_answer(region: str) -> bool:
    r"""Whether `region` states a final answer math-verify could read: only an answer, or a `\boxed{}` or an answer
    phrase ("Answer:", "The final answer is") with something math-like (a digit, LaTeX, math delimiters) in it.

    The last number in running text is no stated answer (math-verify, with its anchors off, would take it).

    >>> states_answer("The answer is 42."), states_answer("so we get 42"), states_answer("The answer is forty")
    (True, False, False)
    """
    if not (is_answer_only(region) or "\\boxed" in region or "answer" in region.lower()):
        return False
    return _MATH_LIKE.search(region) is not None


def gold_text(solution: str) -> str | None:
    r"""The text math-verify reads a gold answer from; None when `solution` is empty.

    A gold in math delimiters, with a `\boxed{}` or an answer phrase, or with words in it ("10 inches", "forty
    three") is given as it is; a bare gold (`2\sqrt{2}`, MATH's answer column) is put in `$...$` to be read as LaTeX.

    >>> gold_text(r"2\sqrt{2}"), gold_text("Janet sells 9 eggs.\n#### 1,080"), gold_text("forty three")
    ('$2\\sqrt{2}$', 'Janet sells 9 eggs.\nThe final answer is 1,080', 'forty three')
    """
    solution = answer_region(solution)
    if not solution:
        return None
    if _DELIMITED.search(solution) or _WORD.search(solution):
        return solution
    return f"${solution}$"


def plain_number(region: str) -> Fraction | None:
    r"""The value of `region`'s final answer where math-verify would certainly read it as this plain number: the
    region ends in it, marked (`\boxed{}`, "answer is", "Answer:") or alone, with nothing before it that
    math-verify ranks higher (another `\boxed{}` or answer phrase, or the Minerva "I hope it is correct").

    >>> plain_number(r"So the answer is $\boxed{1,080}$."), plain_number("Answer: 0.50"), plain_number("42")
    (Fraction(1080, 1), Fraction(1, 2), Fraction(42, 1))
    >>> plain_number(r"\boxed{5}. Answer: 7") is None, plain_number("we get 7") is None
    (True, True)
    """
    found = _ENDING.search(region)
    if found is None or _CLOSING[found["open"]] != found["close"]:
        return None
    head = region[: found.start()]
    if head.strip() or found["mark"]:
        if not (found["mark"] or found["box"]):
            return None
        lowered = head.lower()
        if "\\boxed" in head or "i hope" in lowered or "answer" in lowered:
            return None
    number = found["number"].replace(",", "")
    return Fraction(number) if "." in number else Fraction(int(number))



def stated_text(region: str) -> str | None:
    r"""The final answer of `region` as text (for answers that are no math: words, spellings, lists): the content
    of its last `\boxed{}`, else the rest of the line after its last answer phrase, else the region if it is one
    line; spaces collapsed, a closing full stop dropped. None when there is none.

    >>> stated_text(r"Reversed: \boxed{olleh}."), stated_text("The answer is: Olive, Otter."), stated_text("a\nb")
    ('olleh', 'Olive, Otter', None)
    """
    start = region.rfind("\\boxed{")
    if start >= 0:
        depth, begin = 0, start + len("\\boxed{")
        for i in range(begin, len(region)):
            depth += {"{": 1, "}": -1}.get(region[i], 0)
            if depth < 0:
                answer = region[begin:i]
                break
        else:
            return None
    else:
        stated = list(_STATED.finditer(region))
        answer = stated[-1]["answer"] if stated else region if "\n" not in region else ""
    answer = " ".join(answer.split()).removesuffix(".").strip()
    return answer or None
