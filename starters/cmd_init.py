"""`keel init DIR`: scaffold a project to start from (an app, a two-agent team, tests, a README).

keel init my-party && cd my-party && make test && make dev
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agentkeel.starters.cli import CliError
from agentkeel.starters.exit_codes import ExitCode


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `init` to the `keel` parser."""
    parser = subparsers.add_parser(
        "init",
        help="scaffold a project: an app with a two-agent team, tools with compensations, tests",
        description="Write a project into DIR (which must be empty or absent): pyproject.toml depending "
        "on agentkeel, an app (tools with compensations, one needing review), a scenario for the offline "
        "LLM, tests built on agentkeel.testing, a Makefile and a README with the project's two commands.",
    )
    parser.add_argument("dir", help="the new project's folder")
    parser.add_argument("--json", action="store_true", help="print JSON for scripts instead of text")
    parser.set_defaults(func=_init)


def write_project(folder: Path) -> list[Path]:
    """Write the scaffold into `folder`; returns the files written.

    Raises:
        FileExistsError: `folder` exists and is not empty (nothing is overwritten).
    """
    from agentkeel.starters.scaffold import render

    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(folder)
    written = []
    for relative, text in render(folder.resolve()).items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        written.append(path)
    return written


async def _init(args: argparse.Namespace) -> int:
    folder = Path(args.dir)
    try:
        written = write_project(folder)
    except FileExistsError:
        raise CliError(
            f"{folder} is not empty; keel init writes into a new folder", ExitCode.CONFLICT
        ) from None
    except OSError as exc:
        raise CliError(f"cannot write {folder}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps({"dir": str(folder), "files": [str(p) for p in written]}), flush=True)
    else:
        print(f"wrote {len(written)} files into {folder}:", flush=True)
        for path in written:
            print(f"  {path}", flush=True)
        print(f"next: cd {folder} && make test && make dev", flush=True)
    return 0
