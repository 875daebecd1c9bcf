"""`python -m tests.fakes.github`: the fake GitHub in the foreground, for benchmarks and manual runs.

Serves the demo PR (acme/payments#42), plus synthetic PRs acme/bench#1..N on request. Run it from
the repository root.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from prreview.demo.sample_pr import install_sample_pr
from tests.fakes._standalone import wait_for_signal
from tests.fakes.github import FakeGitHub
from tests.fakes.github._faults import ANONYMOUS_LIMIT


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.fakes.github", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9999)
    parser.add_argument("--latency-s", type=float, default=0.0, help="delay before every answer")
    parser.add_argument("--token", default=None, help="the only token accepted (default: any)")
    parser.add_argument("--anonymous-rate-limit", type=int, default=ANONYMOUS_LIMIT,
                        help="requests per hour without a token (GitHub: 60)")
    parser.add_argument("--enforce-rate-limit", action="store_true",
                        help="answer 403 once a caller's hourly budget is spent, as GitHub does")
    parser.add_argument("--synthetic-prs", type=int, default=0,
                        help="also serve acme/bench PRs 1..N (synthetic, see --synthetic-files)")
    parser.add_argument("--synthetic-files", type=int, default=20, help="files per synthetic PR")
    args = parser.parse_args(argv)
    gh = FakeGitHub(token=args.token, latency_s=args.latency_s, host=args.host, port=args.port,
                    anonymous_rate_limit=args.anonymous_rate_limit,
                    enforce_rate_limit=args.enforce_rate_limit)
    gh.start()
    try:
        sample = install_sample_pr(gh)
        for number in range(1, args.synthetic_prs + 1):
            gh.make_synthetic_pr("acme", "bench", number, file_count=args.synthetic_files)
        print(f"fake GitHub at {gh.url} (GITHUB_API_URL={gh.url})", flush=True)
        print(f"demo PR: {sample}", flush=True)
        if args.synthetic_prs:
            print(f"synthetic PRs: {gh.pr_url('acme', 'bench', 1)} .. "
                  f"{gh.pr_url('acme', 'bench', args.synthetic_prs)}", flush=True)
        wait_for_signal(gh.server)
    finally:
        gh.stop()


if __name__ == "__main__":
    main()
