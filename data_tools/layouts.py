"""Map one raw row of a common layout into the canonical schema, validating every field on the way.

Layouts (the names a source's `layout` option takes):

- `messages` (OpenAI): `messages`, a list of `{"role", "content"}`.
- `sharegpt`: `conversations`, a list of `{"from", "value"}` (`human`/`gpt`/`system`, or the OpenAI roles).
- `alpaca`: `instruction`, optional `input` (appended after a blank line), `output`.
- `prompt_response`: `prompt` and `response` strings.
- `preference` (TRL's preference layouts): `chosen` and `rejected`, each a string or a list of messages, with an
  explicit `prompt` (a string or messages) or an implicit one (the longest common start of `chosen` and `rejected`,
  as TRL's `extract_prompt` finds it). Canonical `messages` is the prompt and the chosen answer; `rejected` holds
  the rejected answer's messages.

A source's `fields` option renames any of these layout fields (or `id`, `domain`, `solution`, `tests`,
`entry_point`) to the column that holds it, e.g. `{"prompt": "question", "response": "answer"}`.
"""

from __future__ import annotations

import json
from typing import Any

from posttrain.errors import UserError

LAYOUTS = ("messages", "sharegpt", "alpaca", "prompt_response", "preference")
ROLES = ("system", "user", "assistant")
CANONICAL = ("id", "domain", "source", "messages", "solution", "tests", "entry_point")
# Every canonical and layout field a source's `fields` option may rename.
FIELDS = ("messages", "conversations", "instruction", "input", "output", "prompt", "response", "chosen", "rejected",
          "id", "domain", "solution", "tests", "entry_point")
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "system": "system", "chatgpt": "assistant", "bing": "assistant", "bard": "assistant"}
# The first layout (in this order) whose fields a row has is the one `auto` picks.
_SIGNATURES = (("preference", ("chosen", "rejected")), ("messages", ("messages",)), ("sharegpt", ("conversations",)),
               ("alpaca", ("instruction", "output")), ("prompt_response", ("prompt", "response")))


class FieldError(ValueError):
    """A row's field is missing or malformed: `field` names it (as the source spells it), the message says what
    would be right."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"field {field!r}: {message}")
        self.field = field


def detect_layout(columns: list[str], fields: dict[str, str] | None = None, prompts_only: bool = False) -> str | None:
    """The layout whose (possibly renamed) fields are all among `columns`, or None; with `prompts_only` (prompt
    sets) the response fields may be absent.

    >>> detect_layout(["instruction", "input", "output"]), detect_layout(["question", "answer"])
    ('alpaca', None)
    >>> detect_layout(["question", "answer"], {"prompt": "question", "response": "answer"})
    'prompt_response'
    >>> detect_layout(["prompt", "solution"]), detect_layout(["prompt", "solution"], prompts_only=True)
    (None, 'prompt_response')
    """
    fields = fields or {}
    for layout, needed in _SIGNATURES:
        if prompts_only:
            needed = needed[:1]
        if all(fields.get(name, name) in columns for name in needed):
            return layout
    return None


def _text(raw: dict[str, Any], name: str, fields: dict[str, str], required: bool = True) -> str | None:
    column = fields.get(name, name)
    value = raw.get(column)
    if value is None:
        if required:
            raise FieldError(column, "missing; expected a non-empty string")
        return None
    if not isinstance(value, str):
        raise FieldError(column, f"expected a string, got {type(value).__name__} {value!r:.60}")
    return value


def _optional_str(raw: dict[str, Any], name: str, fields: dict[str, str]) -> str | None:
    """A verification column as a string: numbers (a CSV's `solution` of 1134) become their text."""
    column = fields.get(name, name)
    value = raw.get(column)
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise FieldError(column, f"expected a string, got {type(value).__name__} {value!r:.60}")


def _message_list(value: Any, column: str, role_key: str, content_key: str, roles: dict[str, str]) -> list[dict]:
    if isinstance(value, str):  # CSV and some exports store the list as JSON text
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise FieldError(column, f"expected a list of messages (or its JSON text), got invalid JSON: {exc}")
    if not isinstance(value, list) or not value:
        raise FieldError(column, f"expected a non-empty list of messages, got {type(value).__name__} {value!r:.60}")
    messages = []
    for i, message in enumerate(value):
        where = f"{column}[{i}]"
        if not isinstance(message, dict):
            raise FieldError(where, f"expected an object with {role_key!r} and {content_key!r}, got {message!r:.60}")
        role, content = message.get(role_key), message.get(content_key)
        if role not in roles:
            raise FieldError(f"{where}.{role_key}", f"{role!r} is not one of {sorted(roles)}")
        if not isinstance(content, str):
            raise FieldError(f"{where}.{content_key}", f"expected a string, got {type(content).__name__}")
        messages.append({"role": roles[role], "content": content})
    return messages


def to_messages(raw: dict[str, Any], layout: str, fields: dict[str, str]) -> list[dict[str, str]]:
    """The conversation of a raw row in `layout`, validated: roles known, contents strings.

    >>> to_messages({"instruction": "Add", "input": "1 and 2", "output": "3"}, "alpaca", {})
    [{'role': 'user', 'content': 'Add\\n\\n1 and 2'}, {'role': 'assistant', 'content': '3'}]
    """
    if layout == "messages":
        column = fields.get("messages", "messages")
        return _message_list(raw.get(column), column, "role", "content", {r: r for r in ROLES})
    if layout == "sharegpt":
        column = fields.get("conversations", "conversations")
        return _message_list(raw.get(column), column, "from", "value", _SHAREGPT_ROLES)
    if layout == "preference":
        prompt, chosen, _ = preference_pair(raw, fields)
        return prompt + chosen
    if layout == "alpaca":
        instruction = _text(raw, "instruction", fields)
        extra = _text(raw, "input", fields, required=False)
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
        output = _text(raw, "output", fields, required=False)
    elif layout == "prompt_response":
        prompt = _text(raw, "prompt", fields)
        output = _text(raw, "response", fields, required=False)
    else:
        raise UserError(f"unknown layout {layout!r}; valid layouts: {list(LAYOUTS)}")
    return [{"role": "user", "content": prompt}] + ([{"role": "assistant", "content": output}] if output else [])


def _turns(raw: dict[str, Any], name: str, fields: dict[str, str], role: str) -> list[dict[str, str]] | None:
    """A preference field as messages: a string is one `role` turn, a list is validated messages; None if absent."""
    column = fields.get(name, name)
    value = raw.get(column)
    if value is None:
        return None
    if isinstance(value, str) and not value.lstrip().startswith("[{"):  # else JSON text of messages (CSV)
        return [{"role": role, "content": value}]
    return _message_list(value, column, "role", "content", {r: r for r in ROLES})


def _common_start(a: Any, b: Any) -> int:
    """Where `a` and `b` (strings or message lists) first differ, backed off a separating space (TRL's rule)."""
    end = 0
    while end < min(len(a), len(b)) and a[end] == b[end]:
        end += 1
    if isinstance(a, str) and end and a[end - 1] == " ":
        end -= 1
    return end


def preference_pair(raw: dict[str, Any], fields: dict[str, str]) -> tuple[list[dict], list[dict], list[dict]]:
    """(prompt, chosen, rejected) messages of a row in a TRL preference layout, validated.

    >>> preference_pair({"prompt": "2+2?", "chosen": "4", "rejected": "5"}, {})[1:]
    ([{'role': 'assistant', 'content': '4'}], [{'role': 'assistant', 'content': '5'}])
    >>> user = {"role": "user", "content": "2+2?"}
    >>> pair = preference_pair({"chosen": [user, {"role": "assistant", "content": "4"}],
    ...                         "rejected": [user, {"role": "assistant", "content": "5"}]}, {})
    >>> pair[0], pair[2]
    ([{'role': 'user', 'content': '2+2?'}], [{'role': 'assistant', 'content': '5'}])
    """
    chosen_column, rejected_column = fields.get("chosen", "chosen"), fields.get("rejected", "rejected")
    prompt = _turns(raw, "prompt", fields, "user")
    if prompt is None:  # implicit prompt: the shared start of the two conversations (or texts)
        chosen_raw, rejected_raw = raw.get(chosen_column), raw.get(rejected_column)
        if isinstance(chosen_raw, str) and isinstance(rejected_raw, str):
            cut = _common_start(chosen_raw, rejected_raw)
            if cut == 0:
                raise FieldError(chosen_column, "no prompt column and no common start with the rejected text; give "
                                                "a `prompt` (explicit prompt) or full texts that share it")
            prompt = [{"role": "user", "content": chosen_raw[:cut]}]
            # As turns of a chat the answers drop the space that joined them to the prompt text.
            raw = {**raw, chosen_column: chosen_raw[cut:].lstrip(), rejected_column: rejected_raw[cut:].lstrip()}
        else:
            chosen, rejected = _turns(raw, "chosen", fields, "assistant"), _turns(raw, "rejected", fields, "assistant")
            if chosen is None or rejected is None:
                raise FieldError(chosen_column if chosen is None else rejected_column, "missing; expected a string or "
                                 "a list of messages")
            cut = _common_start(chosen, rejected)
            prompt, chosen, rejected = chosen[:cut], chosen[cut:], rejected[cut:]
            for column, answer in ((chosen_column, chosen), (rejected_column, rejected)):
                if not answer or answer[0]["role"] != "assistant":
                    raise FieldError(column, "expected the shared conversation followed by a different assistant "
                                             "turn (implicit prompt), or give a `prompt` column")
            return prompt, chosen, rejected
    answers = []
    for name, column in (("chosen", chosen_column), ("rejected", rejected_column)):
        turns = _turns(raw, name, fields, "assistant")
        if not turns or not any(m["content"].strip() for m in turns):
            raise FieldError(column, "missing or empty; expected a string or a list of assistant messages")
        if turns[0]["role"] != "assistant":
            raise FieldError(f"{column}[0].role", f"the answer must start with an assistant turn, got {turns[0]['role']!r}")
        answers.append(turns)
    return prompt, answers[0], answers[1]


def canonical_row(raw: dict[str, Any], layout: str, fields: dict[str, str], require_response: bool) -> dict[str, Any]:
    """A raw row as canonical columns (`messages`, `solution`, `tests`, `entry_point`, and `id` / `domain` when the
    row has them, else None), raising FieldError on what is wrong with it.

    With `require_response` (SFT data) the conversation must have a user turn and end with an assistant turn;
    without it (prompt sets: eval, distillation, decontamination) it needs a user turn only.

    >>> canonical_row({"prompt": "2+2?", "response": "4", "solution": 4}, "prompt_response", {}, True)["solution"]
    '4'
    """
    rejected = None
    if layout == "preference":
        prompt, chosen, rejected = preference_pair(raw, fields)
        messages = prompt + chosen
    else:
        messages = to_messages(raw, layout, fields)
    main = {"messages": "messages", "sharegpt": "conversations", "alpaca": "instruction"}.get(layout, "prompt")
    messages_field = fields.get(main, main)
    if not any(m["role"] == "user" and m["content"].strip() for m in messages):
        raise FieldError(messages_field, "no user turn with text; expected at least one")
    if require_response and (messages[-1]["role"] != "assistant" or not messages[-1]["content"].strip()):
        what = {"alpaca": "output", "prompt_response": "response"}.get(layout)
        if what:
            raise FieldError(fields.get(what, what), "missing or empty; SFT rows need a response")
        raise FieldError(messages_field, "must end with a non-empty assistant turn for SFT")
    row_id = raw.get(fields.get("id", "id"))
    extra = {"rejected": rejected} if rejected is not None else {}
    return {
        **extra,
        "id": None if row_id is None else str(row_id),
        "domain": _optional_str(raw, "domain", fields) if "domain" in fields else None,
        "messages": messages,
        "solution": _optional_str(raw, "solution", fields),
        "tests": _optional_str(raw, "tests", fields),
        "entry_point": _optional_str(raw, "entry_point", fields),
    }
