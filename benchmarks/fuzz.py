"""A longer fuzzing run than CI's: tests/test_fuzz.py again and again, each round with a fresh seed and
more examples, until the time is up or something fails (then the failing input is printed by
Hypothesis, with the seed to replay it).

    python benchmarks/fuzz.py                     # 30 minutes, 2,000 examples per test and round
    python benchmarks/fuzz.py --minutes 120 --examples 5000
    python benchmarks/fuzz.py --seed 1234         # replay one round
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--examples", type=int, default=2000, help="examples per test and round")
    parser.add_argument("--seed", type=int, default=None, help="run one round with this seed")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if k != "CI"}  # CI would fix the seed
    env["NETDSL_FUZZ_EXAMPLES"] = str(args.examples)
    deadline = time.monotonic() + args.minutes * 60
    rounds = 0
    while True:
        seed = args.seed if args.seed is not None else random.randrange(2**32)
        rounds += 1
        print(f"round {rounds}: seed {seed}, {args.examples} examples per test", flush=True)
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:randomly", "tests/test_fuzz.py",
             f"--hypothesis-seed={seed}"],
            cwd=REPO, env=env, check=False,
        )
        if done.returncode != 0:
            print(f"FAILED in round {rounds}: replay with  python benchmarks/fuzz.py --seed {seed}", flush=True)
            return 1
        if args.seed is not None or time.monotonic() > deadline:
            print(f"{rounds} rounds, no failure", flush=True)
            return 0


if __name__ == "__main__":
    sys.exit(main())
