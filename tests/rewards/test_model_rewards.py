"""`reward_model` and `judge` against tiny checkpoints built here and a judge endpoint served on 127.0.0.1."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoModelForSequenceClassification,
    LlamaConfig,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
)

from rewards import get_reward

pytestmark = pytest.mark.integration

# No "score", ":" or "/": a random judge built from these words cannot state a verdict by chance.
WORDS = ["[PAD]", "[UNK]", "</s>", "the", "answer", "is", "42", "41", "what", "6*7", "?"]


def tiny_checkpoint(path, model_class, **config):
    """A 2-layer Llama with a word-level tokenizer, saved to `path`: enough to exercise loading and batching."""
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    torch.manual_seed(0)
    model = model_class(LlamaConfig(vocab_size=len(WORDS), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                    num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=2,
                                    **config))
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return model, fast


@pytest.fixture(scope="module")
def reward_model_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("rm")
    tiny_checkpoint(path, LlamaForSequenceClassification, num_labels=1)
    return path


def test_reward_model_scores_match_a_direct_forward_pass(reward_model_path):
    reward = get_reward({"name": "reward_model", "model": str(reward_model_path), "batch_size": 2, "device": "cpu"})
    prompts = ["what is 6*7 ?"] * 3
    completions = ["the answer is 42", "the answer is 41", "42"]
    scores = reward(prompts=prompts, completions=completions)
    model = AutoModelForSequenceClassification.from_pretrained(reward_model_path).eval()
    tokenizer = PreTrainedTokenizerFast.from_pretrained(reward_model_path)
    with torch.no_grad():
        expected = [model(**tokenizer(f"{p}\n{c}", return_tensors="pt")).logits[0, 0].item()
                    for p, c in zip(prompts, completions, strict=True)]
    assert scores == pytest.approx(expected, abs=1e-5)
    assert len(set(scores)) == 3 and reward.failures == 0


def test_reward_model_with_several_labels_gives_a_probability(tmp_path):
    tiny_checkpoint(tmp_path, LlamaForSequenceClassification, num_labels=2)
    reward = get_reward({"name": "reward_model", "model": str(tmp_path), "device": "cpu"})
    scores = reward(prompts=[[{"role": "user", "content": "what is 6*7 ?"}]],
                    completions=[[{"role": "assistant", "content": "42"}]])
    assert 0.0 < scores[0] < 1.0


def test_reward_model_needs_a_path():
    with pytest.raises(ValueError, match="reward 'reward_model' needs option 'model'"):
        get_reward("reward_model")


class JudgeHandler(BaseHTTPRequestHandler):
    """An OpenAI-compatible /v1/chat/completions: replies "Score: <n>" where the rubric shows "answer is <n>"."""

    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        JudgeHandler.requests.append((self.path, body, self.headers.get("Authorization")))
        question = body["messages"][0]["content"]
        if "ramble" in question:
            reply = "Hmm, no verdict."
        else:
            reply = f"Looks fine.\nScore: {question.split('answer is ')[1][0]}"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_endpoint():
    JudgeHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), JudgeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_judge_endpoint_scores_parse_and_unparseable_replies_are_counted(judge_endpoint, monkeypatch):
    monkeypatch.setenv("JUDGE_KEY", "k-123")
    reward = get_reward({"name": "judge", "endpoint": judge_endpoint, "api_model": "judge-1",
                         "api_key_env": "JUDGE_KEY", "rubric": "Q: {prompt}\nGold: {solution}\nA: {completion}"})
    assert reward.required_columns == ("solution",)
    scores = reward(prompts=["6*7?"] * 3, completions=["the answer is 8", "the answer is 3", "ramble"],
                    solution=["42"] * 3)
    assert scores == [0.8, 0.3, None]
    assert reward.unparseable == 1 and reward.failures == 1
    path, body, auth = JudgeHandler.requests[0]
    assert (path, body["model"], auth) == ("/v1/chat/completions", "judge-1", "Bearer k-123")
    assert "Gold: 42" in body["messages"][0]["content"]


def test_judge_unreachable_endpoint_fails_rows_not_training():
    reward = get_reward({"name": "judge", "endpoint": "http://127.0.0.1:9/v1", "request_timeout": 2})
    assert reward(prompts=["q"], completions=["a"]) == [None]
    assert reward.failures == 1 and "APIConnectionError" in reward.stats.first_error


def test_local_judge_generates_and_unparseable_output_is_none(tmp_path):
    tiny_checkpoint(tmp_path, LlamaForCausalLM)
    reward = get_reward({"name": "judge", "model": str(tmp_path), "max_new_tokens": 4, "device": "cpu",
                         "rubric": "{prompt} {completion} score :"})
    scores = reward(prompts=["what is 6*7 ?"] * 2, completions=["42", "41"])
    # A random tiny model cannot state "Score: N": every reply is unparseable, none crashes the call.
    assert scores == [None, None] and reward.unparseable == 2


@pytest.mark.parametrize(
    ("params", "message"),
    [({}, "exactly one of option 'model'"), ({"model": "m", "endpoint": "http://x"}, "exactly one"),
     ({"endpoint": "ftp://x"}, "http\\(s\\) URL"), ({"endpoint": "http://x", "rubric": "{oops"}, "format template")],
)
def test_judge_rejects_bad_options(params, message):
    with pytest.raises(ValueError, match=message):
        get_reward({"name": "judge", **params})
