"""A local stand-in for an OpenAI-compatible embeddings service (its wire format only), for
benchmarks that need a fast provider: POST /v1/embeddings {"input": [...], "model", "dimensions"?}
answers one deterministic unit-free vector per text, derived from the text's bytes.
Usage: python3 stub_embeddings.py PORT DIMENSIONS"""

import hashlib
import json
import random
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DIMENSIONS = int(sys.argv[2])


def vector(text):
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
    rng = random.Random(seed)
    return [rng.random() - 0.5 for _ in range(DIMENSIONS)]


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = [{"object": "embedding", "index": i, "embedding": vector(t)} for i, t in enumerate(texts)]
        reply = json.dumps({"object": "list", "data": data, "model": body.get("model")}).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
