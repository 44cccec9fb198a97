"""A new user's first run, timed: the README's first command (the bash block
under "## Run it") in a fresh clone of this repository with pip's cache off
(PIP_NO_CACHE_DIR=1), until `vllm serve` answers the README's sample chat
request. Prints the seconds to a finished install, to a ready server and to
the first answer, and the answer.

    python bench/e2e/first_run.py [--keep]     # run from the repository root

The clone and its venv go to a temporary folder (removed unless --keep).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PORT = 8000


def readme_first_command() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text[text.index("## Run it"):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


def ask(question: str) -> str:
    body = json.dumps({"messages": [{"role": "user", "content": question}],
                       "max_tokens": 32}).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{PORT}/v1/chat/completions", body,
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return json.load(r)["choices"][0]["message"]["content"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    args = parser.parse_args()
    command = readme_first_command()
    install, serve = command.rsplit("&&", 1)
    assert "vllm serve" in serve, f"the README's first command no longer ends in vllm serve: {serve}"
    work = tempfile.mkdtemp(prefix="first-run-")
    clone = os.path.join(work, "repo")
    subprocess.run(["git", "clone", "-q", ROOT, clone], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLLM_", "PIP_"))}
    env["PIP_NO_CACHE_DIR"] = "1"
    start = time.perf_counter()
    subprocess.run(["bash", "-c", install.strip().rstrip("\\").strip()], cwd=clone, env=env,
                   check=True)
    installed = time.perf_counter() - start
    server = subprocess.Popen(["bash", "-c", serve.strip()], cwd=clone, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        answer, ready = None, None
        while time.perf_counter() - start < 1800 and answer is None:
            if server.poll() is not None:
                raise SystemExit(f"vllm serve exited with {server.returncode}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{PORT}/health", timeout=2)
                ready = ready or time.perf_counter() - start
                answer = ask("What is the capital of France?")
            except OSError:
                time.sleep(0.5)
        answered = time.perf_counter() - start
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps({"install_s": round(installed, 1), "server_ready_s": round(ready, 1),
                      "first_answer_s": round(answered, 1), "answer": answer,
                      "clone": clone if args.keep else None}, indent=2))


if __name__ == "__main__":
    main()
