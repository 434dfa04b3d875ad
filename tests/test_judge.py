"""The judge client against a local OpenAI-compatible server, and the judge prompt builders."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from lmm.eval.benchmarks import common, llava_bench, mmvet, vicuna80
from lmm.eval.judge import (
    DEFAULT_JUDGE_MODELS,
    JudgeClient,
    JudgeRequest,
    extract_content,
    parse_retry_after,
)

REFERENCE = Path(
    os.environ.get("LMM_REFERENCE_EVALS", Path(__file__).resolve().parents[2] / "shared" / "reference-evals")
)
needs_reference = pytest.mark.skipif(
    not REFERENCE.is_dir(),
    reason=f"published reference evaluations not found at {REFERENCE} (set LMM_REFERENCE_EVALS)",
)

SECRET = "sk-test-DO-NOT-LEAK-4242"
KEY_ENV = "LMM_TEST_JUDGE_KEY"


# ---------------------------------------------------------------------------------------------------------
# A fake OpenAI-compatible server
# ---------------------------------------------------------------------------------------------------------


def completion(content: str) -> bytes:
    return json.dumps(
        {"id": "x", "choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}
    ).encode()


class FakeOpenAI:
    """Chat completions on 127.0.0.1: scripted responses first, then replies chosen by the user message.

    User messages containing MALFORMED / NOCHOICES / ECHOAUTH get a broken reply / no choices / a 401 that
    echoes the Authorization header back; anything else gets `ok: <message>`.
    """

    def __init__(self, delay: float = 0.0):
        self.script: list[tuple[int, dict, bytes]] = []
        self.requests: list[dict] = []
        self.delay = delay
        self.lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with fake.lock:
                    fake.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                    fake.in_flight += 1
                    fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
                    scripted = fake.script.pop(0) if fake.script else None
                try:
                    time.sleep(fake.delay)
                    status, headers, payload = scripted or fake.reply_for(body, dict(self.headers))
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                finally:
                    with fake.lock:
                        fake.in_flight -= 1

            def log_message(self, *args):  # keep test output quiet
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        # A short poll interval keeps shutdown (and so each test) fast.
        serve = {"poll_interval": 0.02}
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs=serve, daemon=True)
        self.thread.start()

    @staticmethod
    def reply_for(body: dict, headers: dict) -> tuple[int, dict, bytes]:
        user = body["messages"][-1]["content"]
        if "MALFORMED" in user:
            return 200, {}, b"<html>not json</html>"
        if "NOCHOICES" in user:
            return 200, {}, b'{"choices": []}'
        if "ECHOAUTH" in user:
            return 401, {}, json.dumps({"error": f"bad key in {headers.get('Authorization')}"}).encode()
        if user.endswith(mmvet.MMVET_RETRY_SUFFIX):
            return 200, {}, completion("0.6")
        if "GRADE" in user:
            return 200, {}, completion("Sure")
        return 200, {}, completion(f"ok: {user}")

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    fake = FakeOpenAI()
    yield fake
    fake.close()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def client_factory(server, tmp_path, monkeypatch, sleeps):
    monkeypatch.setenv(KEY_ENV, SECRET)

    def make(**overrides):
        options = {
            "model": "judge-test",
            "base_url": server.url,
            "api_key_env": KEY_ENV,
            "cache_dir": tmp_path / "cache",
            "backoff_base": 0.01,
            "max_retries": 3,
            "timeout": 10,
            "sleep": sleeps.append,
        }
        options.update(overrides)
        return JudgeClient(**options)

    return make


def ask(text: str, **kw) -> JudgeRequest:
    return JudgeRequest(messages=[{"role": "user", "content": text}], **kw)


# ---------------------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------------------


def test_default_judge_models_pinned():
    assert DEFAULT_JUDGE_MODELS["llava_bench"] == "gpt-4-0314"
    assert DEFAULT_JUDGE_MODELS["mmvet"] == "gpt-4-0613"


def test_request_shape_and_auth(server, client_factory):
    result = client_factory().complete(ask("hello", temperature=0.2, max_tokens=7, params={"top_p": 1}))
    assert result.ok and result.content == "ok: hello" and not result.cached
    (req,) = server.requests
    assert req["path"] == "/v1/chat/completions"
    assert req["headers"]["Authorization"] == f"Bearer {SECRET}"
    assert req["body"] == {
        "model": "judge-test",
        "messages": [{"role": "user", "content": "hello"}],
        "temperature": 0.2,
        "max_tokens": 7,
        "top_p": 1,
    }


def test_no_key_no_auth_header(server, client_factory, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    assert client_factory().complete(ask("hi")).ok
    assert "Authorization" not in server.requests[0]["headers"]


def test_cache_hit_makes_no_request(server, client_factory):
    client = client_factory()
    first = client.complete(ask("same"))
    again = client.complete(ask("same", tag="another label"))
    fresh_client = client_factory().complete(ask("same"))
    assert len(server.requests) == 1
    assert again.cached and fresh_client.cached and again.content == first.content
    assert again.tag == "another label"
    # Any change of model, messages or sampling parameters, or another judge run, is a new request.
    client.complete(ask("same", temperature=0.5))
    client.complete(ask("same", model="other-judge"))
    client.complete(ask("same", run=1))
    assert len(server.requests) == 4


def test_cache_files_are_whole_and_damaged_ones_are_misses(server, client_factory, tmp_path):
    client = client_factory()
    client.complete(ask("one"))
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and not files[0].name.startswith(".tmp-")
    assert json.loads(files[0].read_text())["content"] == "ok: one"
    files[0].write_text("{truncated")
    assert not client.complete(ask("one")).cached
    assert json.loads(files[0].read_text())["content"] == "ok: one"


def test_429_then_200_is_retried_honouring_retry_after(server, client_factory, sleeps):
    server.script.append((429, {"Retry-After": "3"}, b'{"error": "rate limited"}'))
    result = client_factory().complete(ask("busy"))
    assert result.ok and result.content == "ok: busy"
    assert len(server.requests) == 2
    assert sleeps == [3.0]


def test_5xx_backs_off_exponentially(server, client_factory, sleeps):
    server.script += [(500, {}, b"oops"), (503, {}, b"oops")]
    assert client_factory().complete(ask("flaky")).ok
    assert sleeps == [0.01, 0.02]


def test_gives_up_after_max_retries_without_raising(server, client_factory, sleeps):
    server.script += [(503, {}, b"down")] * 4
    result = client_factory(max_retries=3).complete(ask("down"))
    assert not result.ok and "gave up" in result.error and not result.parse_failure
    assert len(server.requests) == 4 and len(sleeps) == 3


def test_connection_errors_are_retried(client_factory, sleeps):
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    result = client_factory(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2).complete(ask("anyone?"))
    assert not result.ok and "connection error" in result.error
    assert sleeps == [0.01, 0.02]


def test_malformed_replies_are_counted_not_raised(server, client_factory, tmp_path):
    requests = [ask("fine 1", tag=1), ask("MALFORMED", tag=2), ask("NOCHOICES", tag=3), ask("fine 2", tag=4)]
    batch = client_factory().judge_many(requests, max_workers=4)
    assert [r.tag for r in batch.results] == [1, 2, 3, 4]
    assert [r.content for r in batch.results] == ["ok: fine 1", None, None, "ok: fine 2"]
    assert batch.parse_failures == 2 and batch.errors == 2
    # Unparseable replies are not cached: a rerun asks again.
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_replies_the_caller_refuses_are_never_cached_nor_served_from_the_cache(server, client_factory, tmp_path):
    def wants_digits(reply: str) -> bool:
        return reply.split(": ", 1)[1].isdigit()

    client = client_factory()
    prose = client.complete(ask("I cannot rate these answers.", accept=wants_digits))
    assert prose.ok and prose.rejected and prose.content == "ok: I cannot rate these answers."
    assert not list((tmp_path / "cache").glob("*.json"))
    assert client.complete(ask("I cannot rate these answers.", accept=wants_digits)).rejected
    assert len(server.requests) == 2  # asked again, not served from a cache
    # A refused reply already in the cache (e.g. written before the check existed) is asked again too.
    client.complete(ask("7"))
    assert client.complete(ask("7")).cached and len(server.requests) == 3
    again = client.complete(ask("7", accept=lambda reply: False))
    assert again.rejected and not again.cached and len(server.requests) == 4
    good = client.complete(ask("8", accept=wants_digits))
    assert not good.rejected and client.complete(ask("8", accept=wants_digits)).cached
    batch = client.judge_many([ask("x", accept=wants_digits), ask("9", accept=wants_digits)])
    assert batch.rejected == 1 and batch.errors == 0


def test_judge_many_bounds_concurrency(client_factory, server):
    server.delay = 0.05
    batch = client_factory().judge_many([ask(f"q{i}") for i in range(9)], max_workers=3)
    assert batch.errors == 0
    assert 1 < server.max_in_flight <= 3


def test_api_key_is_written_nowhere(server, client_factory, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    server.script.append((429, {"Retry-After": "0"}, b"slow"))
    client = client_factory()
    requests = [ask("good"), ask("MALFORMED"), ask("ECHOAUTH"), ask("good", run=2)]
    batch = client.judge_many(requests, max_workers=2)
    batch.write_jsonl(tmp_path / "out" / "judged.jsonl")
    client.complete(ask("good"))

    echoed = next(r for r in batch.results if r.error and "HTTP 401" in r.error)
    assert SECRET not in echoed.error and "***" in echoed.error  # the server echoed it; we scrubbed it
    assert SECRET not in caplog.text
    assert SECRET not in repr(client.__dict__)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.parent.name == "cache" for p in written) and any(p.parent.name == "out" for p in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path


def test_mmvet_retry_rule_through_the_client(server, client_factory):
    client = client_factory()
    grade = mmvet.grade_mmvet_with_retries(lambda m, t: client.call_text(m, t, max_tokens=3), "GRADE me")
    assert (grade.score, grade.calls) == (0.6, 2)
    assert [r["body"]["temperature"] for r in server.requests] == [0.0, 0.0]
    assert all(r["body"]["max_tokens"] == 3 for r in server.requests)


def test_parse_retry_after_and_extract_content():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait
    assert extract_content(completion("hi")) == "hi"
    assert extract_content(b"nope") is None
    assert extract_content(b'{"choices": [{"message": {"content": null}}]}') is None


# ---------------------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------------------


def test_llava_bench_message_layout():
    rules = {"llava_bench_conv": {"role": "Assistant", "prompt": "Rate both."}}
    messages = llava_bench.build_llava_bench_messages(
        context="A cat.",
        question="What animal?",
        reference_answer="A cat.",
        model_answer="A dog.",
        category="conv",
        rules=rules,
    )
    assert messages[0] == {"role": "system", "content": common.REVIEW_SYSTEM_PROMPT}
    assert messages[1]["content"] == (
        "[Context]\nA cat.\n\n[Question]\nWhat animal?\n\n"
        "[Assistant 1]\nA cat.\n\n[End of Assistant 1]\n\n"
        "[Assistant 2]\nA dog.\n\n[End of Assistant 2]\n\n"
        "[System]\nRate both.\n\n"
    )
    with pytest.raises(KeyError, match="llava_bench_detail"):
        llava_bench.build_llava_bench_messages(
            context="", question="", reference_answer="", model_answer="", category="detail", rules=rules
        )


def test_llava_bench_contexts():
    assert llava_bench.llava_bench_context({"caption": "Hi."}) == "Hi."
    assert llava_bench.llava_bench_context({"caption": "Hi."}, legacy_character_lines=True) == "H\ni\n."
    coco = {
        "captions": ["A bus.", "A red bus."],
        "instances": [{"category": "bus", "bbox": [0.1, 0.2, 0.5, 0.9]}],
    }
    assert llava_bench.llava_bench_context(coco) == "A bus.\nA red bus.\n\nbus: [0.1, 0.2, 0.5, 0.9]"


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@needs_reference
def test_llava_bench_items_from_published_files():
    wild = REFERENCE / "llava_bench_in_the_wild"
    rules = llava_bench.load_rules(REFERENCE / "rule.json")
    items = llava_bench.llava_bench_items(
        read_jsonl(wild / "questions.jsonl"),
        read_jsonl(wild / "context.jsonl"),
        read_jsonl(wild / "answers_gpt4.jsonl"),
        read_jsonl(wild / "answers" / "llava-v1.5-13b.jsonl"),
        rules,
    )
    assert len(items) == 60
    reviews = read_jsonl(wild / "reviews" / "llava-v1.5-13b-eval1.jsonl")
    assert [(i.question_id, i.category) for i in items] == [
        (r["question_id"], r["category"]) for r in reviews
    ]
    user = items[0].messages[1]["content"]
    assert user.startswith(
        "[Context]\nAn aerial view of Diamond Head in the Hawaiian Islands.\n\n[Question]\n"
    )
    assert "[Assistant 1]\nThe famous sight in the photo is Diamond Head.\n\n[End of Assistant 1]" in user
    assert "[Assistant 2]\nThe famous sight in the photo is the Diamond Head, a volcanic crater" in user
    assert user.endswith(f"[System]\n{rules['llava_bench_conv']['prompt']}\n\n")


@needs_reference
def test_mmvet_query_from_published_grader_prompt():
    grader = mmvet.load_grader_prompt(REFERENCE / "mm_vet" / "grader_prompt_mm-vet_v1.txt")
    question = json.loads((REFERENCE / "mm_vet" / "mm-vet_capabilities_transcribed.json").read_text())["v1_0"]
    (message,) = mmvet.build_mmvet_messages(grader, question["question"], question["answer"], "x = 3")
    assert message["role"] == "user"
    assert message["content"] == grader + "\nWhat is x in the equation? | -1 <AND> -5 | x = 3 | "
    # The new row continues the few-shot table, whose rows are written the same way.
    assert "What is x in the equation? | -1 <AND> -5 | x = 3 | 0.0" in grader
    with pytest.raises(ValueError):
        mmvet.build_mmvet_query(grader, "Explain", None, "...")


@needs_reference
def test_vicuna_messages_pick_the_reviewer_by_category():
    vicuna = REFERENCE / "vicuna80"
    templates = vicuna80.VicunaTemplates.load(vicuna / "prompt.jsonl", vicuna / "reviewer.jsonl")
    by_id = {p["prompt_id"]: p for p in read_jsonl(vicuna / "prompt.jsonl")}
    for category, prompt_id in [("generic", 1), ("writing", 1), ("coding", 2), ("math", 3)]:
        messages, params = vicuna80.build_vicuna_messages("Q?", "first", "second", category, templates)
        expected = by_id[prompt_id]
        assert messages[0] == {"role": "system", "content": expected["system_prompt"]}
        assert messages[1]["content"] == expected["prompt_template"].format(
            question="Q?", answer_1="first", answer_2="second", **expected["defaults"]
        )
        assert params == {"temperature": 0.2, "max_tokens": 1024}
