"""A fake OpenAI-compatible judge on 127.0.0.1 for the evaluation tests (imported by test_eval_*.py)."""

from __future__ import annotations

import json
import shutil
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from PIL import Image, ImageDraw

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "eval"

# LLaVA-Bench replies per rule marker: (reference score, model score). Relative scores: conv 75, detail 100,
# complex 150, overall (6 + 5 + 6) / (8 + 5 + 4) = 100.
PAIRS = {"RULE-conv": "8 6", "RULE-detail": "5 5", "RULE-complex": "4 6"}


def default_reply(user: str) -> str:
    for marker, pair in PAIRS.items():
        if marker in user:
            return f"{pair}\nAssistant 2 was {'better' if marker == 'RULE-complex' else 'fine'}."
    if "GRADER-FIXTURE" in user:
        # MM-Vet: the last table row is the question to grade; the colour question is right, the rest wrong.
        last = user.rstrip().splitlines()[-1]
        return "1.0" if "What colour is the square?" in last else "0.0"
    if "VICUNA-FIXTURE" in user:
        return "8 9\nAssistant 2 is a little more helpful."
    return "no idea"


class FakeJudge:
    """Chat completions that answer by markers in the user message; `fail_when(user)` -> HTTP 400;
    `reply_when(user)` -> a reply text that replaces the default one (None keeps it)."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_when = lambda user: False
        self.reply_when = lambda user: None
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                user = body["messages"][-1]["content"]
                with fake.lock:
                    fake.requests.append(body)
                if fake.fail_when(user):
                    status, payload = 400, b'{"error": {"message": "fixture failure"}}'
                else:
                    override = fake.reply_when(user)
                    reply = default_reply(user) if override is None else override
                    status = 200
                    payload = json.dumps({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                                "content": reply}}]}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)
        self.thread.start()

    def count(self, marker: str = "") -> int:
        with self.lock:
            return sum(marker in r["messages"][-1]["content"] for r in self.requests)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def draw_png(path: Path, colour=(200, 30, 30), size: int = 40) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.new("RGB", (size, size + 8), (255, 255, 255))  # not square: exercises the padding
    ImageDraw.Draw(image).rectangle([8, 8, size - 8, size - 8], fill=colour)
    image.save(path)


def copy_fixture(name: str, dest: Path) -> Path:
    """A fixture folder copied under `dest`, with the images its questions name drawn into images/."""
    folder = dest / name
    shutil.copytree(FIXTURES / name, folder)
    names = {"llava_bench": ["001.png", "002.png"], "llava_bench_coco": ["COCO_val2014_000000000001.jpg"],
             "mmvet": ["v1_0.png", "v1_1.png"]}.get(name, [])
    for i, image in enumerate(names):
        draw_png(folder / "images" / image, colour=((200, 30, 30), (30, 30, 200))[i % 2])
    return folder


def judge_overrides(server: FakeJudge, cache: Path) -> list[str]:
    return [f"eval.judge.base_url={server.url}", f"eval.judge.cache_dir={cache}", "eval.judge.max_retries=0",
            "eval.judge.timeout_s=10", "eval.judge.max_workers=4"]


def test_fake_judge_replies_by_marker():
    server = FakeJudge()
    try:
        body = {"model": "m", "messages": [{"role": "user", "content": "x RULE-conv y"}]}
        req = urllib.request.Request(f"{server.url}/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            reply = json.loads(resp.read())["choices"][0]["message"]["content"]
        assert reply.startswith("8 6\n") and server.count("RULE-conv") == 1
    finally:
        server.close()
