"""Check optdfa on the host's LightOn OPU: ``python hardware/check_lightonml.py [--config-file PATH]``.

Runs :func:`optdfa.integrations.lightonml_check.run_checks` — the code paths only real hardware
exercises (docs/lightonml.md, "What only a real OPU exercises") — and prints PASS / FAIL / SKIP
per check; the exit code is 1 if any check fails. ``--simulated`` runs the same checks on
lightonml's simulator with optdfa's noisy camera (a dry run without hardware).
"""

import argparse
import sys

from optdfa.integrations.lightonml_check import format_checks, run_checks

if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config-file", default="", help="OPU configuration (default: the host's)")
    parser.add_argument("--simulated", action="store_true", help="dry run on the simulator")
    parser.add_argument("--profile", default="lighton-aurora", help="profile (encoding, camera)")
    parser.add_argument("--retries", type=int, default=0, help="retries of a busy/failing OPU")
    args = parser.parse_args()
    results = run_checks(
        simulated=args.simulated,
        config_file=args.config_file,
        profile=args.profile,
        retries=args.retries,
    )
    print(format_checks(results))
    sys.exit(1 if any(r.status == "FAIL" for r in results) else 0)
