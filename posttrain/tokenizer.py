"""The offline tokenizer of the embedded tiny default.

Real runs use the checkpoint's own tokenizer; the tiny default needs one built here with nothing downloaded.
It is a byte-level BPE (every string encodes, nothing is ever unknown) with digits split one per token, which
keeps arithmetic learnable for a tiny model, trained deterministically on a small embedded corpus that covers
the builtin tasks' text (numbers, arithmetic working, word problems, Python, English).

Special tokens follow DeepSeek-V3's chat layout: ``<|bos|>`` starts a conversation, ``<|system|>``,
``<|user|>`` and ``<|assistant|>`` open turns, ``<|eos|>`` ends an assistant turn. ``<think>`` and ``</think>``
are single atomic tokens that survive ``skip_special_tokens=True`` (as in DeepSeek-R1's tokenizer).
The chat template marks assistant turns with ``{% generation %}`` so TRL's ``assistant_only_loss`` works.

>>> tok = build_tokenizer()
>>> ids = tok.apply_chat_template([{"role": "user", "content": "2+2?"}], add_generation_prompt=True)
>>> tok.decode(ids)
'<|bos|><|user|>2+2?<|assistant|>'
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

BOS, EOS, PAD = "<|bos|>", "<|eos|>", "<|pad|>"
ROLE_TOKENS = {"system": "<|system|>", "user": "<|user|>", "assistant": "<|assistant|>"}
THINK_TOKENS = ["<think>", "</think>"]
SPECIAL_TOKENS = [BOS, EOS, PAD, *ROLE_TOKENS.values()]
VOCAB_SIZE = 1024

# System turn first if any; the assistant's text (with its end token) is the trainable "generation" span.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}<|system|>{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}<|user|>{{ message['content'] }}"
    "{% elif message['role'] == 'assistant' %}<|assistant|>"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

_CORPUS = [
    "What is 345 + 789? Let's add column by column. 5 + 9 = 14, write 4 carry 1.",
    "Compute 12 * 34. First 12 * 4 = 48, then 12 * 30 = 360, so 48 + 360 = 408. The answer is \\boxed{408}.",
    "Subtract: 900 - 123 = 777. Therefore the final answer is 777. #### 777",
    "Tom has 5 apples and buys 3 more boxes with 4 apples each. How many apples does Tom have now?",
    "Sara had 20 dollars, spent 7 dollars on a book and 3 dollars on lunch. How much money is left?",
    "A train travels 60 miles per hour for 3 hours. How far does it travel in total?",
    "Write a Python function that returns the sum of a list of numbers.",
    "def solve(numbers):\n    total = 0\n    for x in numbers:\n        total += x\n    return total\n",
    "```python\ndef reverse_string(s: str) -> str:\n    return s[::-1]\n```",
    "assert solve([1, 2, 3]) == 6\nassert is_even(4) is True\nassert count_vowels('hello') == 2",
    "def check(candidate):\n    assert candidate('abc') == 'cba'\n    return None\n",
    "if len(items) == 0:\n        return []\n    result = sorted(items)\n    while i < n:\n        i += 1",
    "Sort the following words alphabetically: banana, apple, cherry. Answer: apple, banana, cherry",
    "Reverse the string 'hello world'. Count the letters in the word. Convert the text to uppercase.",
    "<think>I need to work this out step by step.</think> The answer is 42.",
    "You are a helpful assistant. Please reason step by step, and put your final answer within \\boxed{}.",
    "the of and to in is that for it with as was on be by this are from at or an not but which have",
    "first second then next so because total each more less many how much number answer question result",
]


def build_tokenizer(vocab_size: int = VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Build the embedded tiny default's tokenizer (deterministic, offline)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=list(ROLE_TOKENS.values()),
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        clean_up_tokenization_spaces=False,
    )
    fast.add_tokens(THINK_TOKENS)  # atomic, but not "special": decode keeps them
    return fast
