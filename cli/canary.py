"""`fmnist canary`: judge the canary against stable on the traffic both answered: promote, hold or roll back.

The verdict is the exit code, so that a schedule can act on it or page
someone: 0 promote, 10 hold (not enough traffic yet, or the two saw different
inputs), 11 roll back; 2 is bad input (missing logs, no canary, a version not
on disk), 1 an unreachable metrics page. `--apply` acts on the verdict
through the release side and records it in the rollout's history.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys

from cli.flags import add_config_flags, build_config
from cli.rollout import SERVING_FIELDS, add_reason_flag
from core.canary_rule import EXIT_CODES
from core.config import CanaryConfig, DriftConfig, PipelineConfig
from core.errors import ConfigError, InputError

EXIT_TEXT = ", ".join(f"{code} {decision.lower()}" for decision, code in EXIT_CODES.items())


def register(commands, common: argparse.ArgumentParser) -> None:
    canary = commands.add_parser(
        "canary",
        parents=[common],
        help=f"judge the canary against stable on their logged traffic (exit {EXIT_TEXT})",
        description="Compare the requests the canary and stable answered over the same period (from the "
        "canary's first logged request): input drift between them, each version's estimated accuracy "
        "and the difference with its interval, their agreement on a sample of the logged inputs "
        "replayed through both SavedModels, and (with --metrics-url) failed requests and p99 latency. "
        "Prints PROMOTE, HOLD (with how many more requests are needed) or ROLL BACK with the evidence. "
        f"Exit codes: {EXIT_TEXT}; 2 bad input, 1 the metrics page could not be read.",
    )
    canary.add_argument("logs", help="request-log directory or file (fmnist serve --request-log-dir)")
    canary.add_argument(
        "--metrics-url",
        help="the server's Prometheus page, e.g. http://127.0.0.1:8501/monitoring/prometheus/metrics: "
        "failed requests and p99 latency per version (default: not measured)",
    )
    canary.add_argument(
        "--apply",
        action="store_true",
        help="act on the verdict: promote, or take the canary out of service (its label back on stable); "
        "every verdict, a hold too, is recorded in the rollout's history; for a schedule (cron)",
    )
    add_reason_flag(canary)
    canary.add_argument("--json", action="store_true", help="print the verdict and evidence as JSON")
    add_config_flags(canary, PipelineConfig, SERVING_FIELDS, "paths")
    add_config_flags(canary, CanaryConfig, title="the verdict's thresholds")
    add_config_flags(canary, DriftConfig, title="input drift between canary and stable")
    canary.set_defaults(handler=canary_command)


def _judged_versions(config: PipelineConfig) -> tuple[int, int]:
    """(canary, stable) from the rollout state; InputError when there is no canary apart from stable."""
    from release.rollout import read_rollout, rollout_path

    rollout = read_rollout(config.serving_dir, config.model_name)
    if rollout.canary is None or rollout.canary == rollout.stable:
        state = rollout.describe() if rollout.stable is not None else "nothing pushed yet"
        raise InputError(
            f"{rollout_path(config.serving_dir, config.model_name)}: no canary to judge ({state})"
        )
    return rollout.canary, rollout.stable


def canary_command(args: argparse.Namespace) -> int:
    from core.canary_rule import decide
    from monitoring.batches import request_log_files
    from monitoring.canary import evidence_lines, gather
    from monitoring.version_metrics import read_page

    if args.reason and not args.apply:
        raise ConfigError("--reason: recorded only with --apply (nothing else is written)")
    config = build_config(args, PipelineConfig)
    thresholds = build_config(args, CanaryConfig)
    drift = build_config(args, DriftConfig)
    files = request_log_files(args.logs)
    versions = _judged_versions(config)
    page = read_page(args.metrics_url) if args.metrics_url else None
    findings = gather(files, config.serving_dir, config.model_name, versions, thresholds, drift, page)
    verdict = decide(findings.evidence, thresholds)
    if args.json:
        print(json.dumps({**dataclasses.asdict(verdict), "evidence": findings.evidence.to_dict(),
                          "notes": list(findings.notes)}))  # fmt: skip
    else:
        print(f"{verdict.decision}: {'; '.join(verdict.reasons)}")
        print("\n".join(f"  {line}" for line in evidence_lines(findings)))
    if args.apply:
        from release.rollout import apply_verdict

        rollout = apply_verdict(
            config.serving_dir, config.model_name, verdict, findings.evidence.to_dict(), args.reason
        )
        print(f"applied: {rollout.describe()} (recorded in the rollout's history)", file=sys.stderr)
    return verdict.exit_code
