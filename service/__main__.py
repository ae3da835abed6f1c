"""``python -m service [--host H] [--port P]``: run the service under uvicorn;
``python -m service migrate | purge-images``: the records database's commands."""

from __future__ import annotations

import argparse
import logging
import sys

from service.app import create_app
from service.records import cli as records_cli
from service.server import serve
from service.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parse the command line (settings come from BONEFRAC_* variables) and serve, or
    run a records command (``migrate``, ``purge-images``)."""
    args_in = sys.argv[1:] if argv is None else argv
    if args_in and args_in[0] in records_cli.COMMANDS:
        sys.exit(records_cli.main(args_in))
    settings = Settings()
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Serve the bone-fracture classifier over HTTP. Other settings come "
        "from BONEFRAC_* environment variables (see docs/service.md).",
        epilog="Records database commands: python -m service migrate | purge-images "
        "[--days N] (see docs/records.md).",
    )
    parser.add_argument("--host", default=settings.host, help="default: %(default)s")
    parser.add_argument("--port", type=int, default=settings.port, help="default: %(default)s")
    parser.add_argument("--log-level", default=settings.log_level, help="default: %(default)s")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(create_app(settings), settings, host=args.host, port=args.port, log_level=args.log_level)


if __name__ == "__main__":
    main()
