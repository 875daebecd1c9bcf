"""`python -m tests.fakes.llm`: the scripted LLM in the foreground, for benchmarks and manual runs.

Run it from the repository root.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tests.fakes._standalone import wait_for_signal
from tests.fakes.llm import ScriptedLLM


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.llm", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9998)
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--api-key", default=None, help="bearer key the server requires (default: none)")
    parser.add_argument("--model", default="scripted-reviewer", help="model id listed by /v1/models")
    args = parser.parse_args(argv)
    llm = ScriptedLLM(latency_s=args.latency_s, api_key=args.api_key, model=args.model, host=args.host,
                      port=args.port)
    llm.start()
    try:
        print(f"scripted LLM at {llm.base_url} (LLM_BASE_URL={llm.base_url}, LLM_MODEL={llm.model})",
              flush=True)
        wait_for_signal(llm.server)
    finally:
        llm.stop()


if __name__ == "__main__":
    main()
