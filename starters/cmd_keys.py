"""`keel keygen`: a reviewer's Ed25519 key pair for signed review decisions.

    keel keygen ~/.keel/ana.key      # writes ana.key (0600) and ana.key.pub

Put the public key (`ed25519:...`) in the team's `review.reviewer_keys`; point
`KEEL_REVIEWER_KEY` at the private key file, and `keel approve/reject/edit` and
the Python API sign every decision with it.
"""

from __future__ import annotations

import argparse
import json

from agentkeel.starters.cli_common import CliError
from agentkeel.starters.exit_codes import ExitCode


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `keygen` to the `keel` parser."""
    parser = subparsers.add_parser(
        "keygen",
        help="make a reviewer key pair for signed review decisions",
        description="Write a new Ed25519 private key to PATH (mode 0600, never overwritten) and its "
        "public key to PATH.pub; print the public key to list in a team's review.reviewer_keys.",
    )
    parser.add_argument("path", help="file for the private key, e.g. ~/.keel/reviewer.key")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    parser.set_defaults(func=_keygen)


async def _keygen(args: argparse.Namespace) -> int:
    from agentkeel.signing import write_key_pair

    path = args.path
    try:
        public = write_key_pair(path)
    except FileExistsError:
        raise CliError(f"{path} exists; a key is never overwritten", ExitCode.CONFLICT) from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps({"private_key": str(path), "public_key": public}), flush=True)
    else:
        print(f"private key: {path} (keep it secret; export KEEL_REVIEWER_KEY={path})", flush=True)
        print(f"public key:  {public}", flush=True)
        print("list the public key in the team's review.reviewer_keys", flush=True)
    return 0
