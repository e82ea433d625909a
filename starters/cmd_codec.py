"""`keel codec-server`: serve the platform's payload codec to the Temporal Web UI and CLI.

    KEEL_CODEC_TOKEN=... KEEL_ENCRYPTION_KEY=... keel codec-server [--host H] [--port P]

Then:

* CLI: `temporal workflow show -w ID --codec-endpoint http://127.0.0.1:8888 --codec-auth "Bearer $TOKEN"`;
* Web UI: `keel server --codec-endpoint http://127.0.0.1:8888/$TOKEN` (the UI of a server
  without single sign-on cannot send an Authorization header, so the token goes in the path).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys

from temporalio.converter import PayloadCodec

from agentkeel.codec import CodecConfigError, build_codec
from agentkeel.dev.codec_server import DEFAULT_CORS_ORIGINS, DEFAULT_HOST, DEFAULT_PORT, CodecServer
from agentkeel.settings import ConfigError, Settings, load_settings
from agentkeel.starters.cli_common import CliError
from agentkeel.starters.exit_codes import ExitCode

TOKEN_ENV = "KEEL_CODEC_TOKEN"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `codec-server` to the `keel` parser."""
    parser = subparsers.add_parser(
        "codec-server",
        help="serve the payload codec (decompress/decrypt) to the Temporal Web UI and CLI",
        description="Serve Temporal's remote codec protocol (POST /encode, POST /decode) with the "
        "platform's codec. Needs a token (KEEL_CODEC_TOKEN or --token); the encryption keys come "
        "from KEEL_ENCRYPTION_KEY / KEEL_ENCRYPTION_KEYS_OLD.",
    )
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to bind (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT})")
    parser.add_argument(
        "--token",
        default=None,
        help=f"bearer token callers must present (default ${TOKEN_ENV}; prefer the variable: "
        "a command line is visible to other users)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=None,
        metavar="ORIGIN",
        help=f"browser origin allowed to call, repeatable (default {', '.join(DEFAULT_CORS_ORIGINS)})",
    )
    parser.add_argument(
        "--no-resolve",
        action="store_true",
        help="show conversation-store references as they are (default: read them back from the store "
        "of keel.toml / KEEL_STORE_URL, so the UI shows whole conversations)",
    )
    parser.set_defaults(func=_codec_server)


def _resolving(codec: PayloadCodec, settings: Settings) -> PayloadCodec:
    """`codec` reading the conversation store's references back (see `agentkeel.dev.codec_resolve`)."""
    from agentkeel.activities.conversation import ConversationLayer
    from agentkeel.dev.codec_resolve import ResolvingCodec
    from agentkeel.store import StoreError, open_store

    try:
        return ResolvingCodec(codec, ConversationLayer(open_store(settings)))
    except StoreError as exc:
        raise CliError(f"cannot open the conversation store: {exc} (or pass --no-resolve)") from None


async def _codec_server(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
        secret = settings.encryption_key
        codec = build_codec(os.environ, key=secret.get_secret_value() if secret is not None else "")
    except (ConfigError, CodecConfigError) as exc:
        raise CliError(str(exc)) from None
    if not args.no_resolve:
        codec = _resolving(codec, settings)
    token = args.token or (settings.codec_token.get_secret_value() if settings.codec_token else "")
    if not token:
        raise CliError(f"no token: set {TOKEN_ENV} (or pass --token)")
    server = CodecServer(
        codec,
        token,
        host=args.host,
        port=args.port,
        cors_origins=args.cors_origin or DEFAULT_CORS_ORIGINS,
    )
    try:
        await server.start()
    except OSError as exc:
        raise CliError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", ExitCode.SERVICE_FAILED
        ) from None
    mode = "decrypt + decompress" if codec.encrypts else "decompress only (no KEEL_ENCRYPTION_KEY)"
    print(f"codec server on {server.url} ({mode})", flush=True)
    print(
        f"  CLI:    temporal workflow show -w ID --codec-endpoint {server.url} "
        f'--codec-auth "Bearer ${TOKEN_ENV}"',
        flush=True,
    )
    print(f"  Web UI: keel server --codec-endpoint {server.url}/${TOKEN_ENV}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
    try:
        await stop.wait()
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
        await server.stop()
        print("codec server stopped", file=sys.stderr, flush=True)
    return 0
