"""Triage's CPU cost per request: the pure function intake runs for every new ticket.

``python -m bench.triage [--repeat 7] [--rounds 20]``

Times ``services.intake.triage.triage`` with the shipped policy over the labelled requests of
``tests/intake/triage_cases.yaml`` (Chinese and English, short and long), ``--rounds`` passes
per repeat, and keeps the fastest of ``--repeat`` repeats: on a shared machine the minimum is
the figure least disturbed by others. Nothing else of intake runs (see ``bench.intake`` for the
whole service).

Prints ``triage_us_per_request`` (the fastest repeat), ``triage_us_median`` and ``requests``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

import yaml

from bench._support import ROOT, report
from services.intake.contract import Request, read_request
from services.intake.triage import triage
from services.policy import DEFAULT_POLICY, Policy
from shared.policyfile import load_policy

CASES = ROOT / "tests" / "intake" / "triage_cases.yaml"


def requests() -> list[Request]:
    """The labelled cases as intake receives them."""
    found = []
    for n, case in enumerate(yaml.safe_load(CASES.read_text())["cases"]):
        customer = {"name": "Customer", "email": "customer@example.com"}
        customer.update({k: case[k] for k in ("language", "tier") if case.get(k)})
        body: dict[str, Any] = {
            "channel": case.get("channel", "email"),
            "channel_message_id": f"bench-{n}",
            "received_at": "2026-11-20T09:30:00+08:00",
            "customer": customer,
            "subject": case["subject"],
            "description": case["description"],
        }
        body.update({k: case[k] for k in ("product_line", "problem_type", "priority") if k in case})
        request = read_request(json.dumps(body).encode())
        assert isinstance(request, Request), request
        found.append(request)
    return found


def run(repeat: int, rounds: int) -> dict[str, Any]:
    policy, version = load_policy(DEFAULT_POLICY, Policy)
    batch = requests()
    for request in batch:  # warm caches (compiled keywords, stems)
        triage(request, policy.triage, version)
    timings = []
    for _ in range(repeat):
        began = time.process_time()
        for _ in range(rounds):
            for request in batch:
                triage(request, policy.triage, version)
        timings.append((time.process_time() - began) / (rounds * len(batch)) * 1e6)
    return {
        "triage_us_per_request": round(min(timings), 1),
        "triage_us_median": round(statistics.median(timings), 1),
        "requests": len(batch),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    report(run(args.repeat, args.rounds))


if __name__ == "__main__":
    main()
