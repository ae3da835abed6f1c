"""``python -m service migrate`` and ``python -m service purge-images``: the operator's
commands on the records database (the same ``BONEFRAC_*`` settings as the service).

``migrate`` brings the schema up to date (the service also does this at start-up; an
operator who runs migrations by hand before a deployment uses this). ``purge-images``
deletes stored images not sent for ``BONEFRAC_IMAGE_RETENTION_DAYS`` days (or
``--days``); run it daily (cron, a Kubernetes CronJob). The answers' records stay.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from sqlalchemy.exc import SQLAlchemyError

from service.records.db import current_revision, describe, make_engine, migrate, resolve_url
from service.records.log import purge_images
from service.settings import Settings

COMMANDS = ("migrate", "purge-images")


def main(argv: Sequence[str]) -> int:
    """Run one records command; 0 on success, 1 when the database cannot be reached."""
    parser = argparse.ArgumentParser(
        prog="python -m service",
        description="Commands on the records database named by BONEFRAC_DATABASE_URL "
        "(default: SQLite in BONEFRAC_RECORDS_DIR).",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="bring the records database's schema up to date")
    purge = commands.add_parser("purge-images", help="delete stored images past retention")
    purge.add_argument(
        "--days",
        type=int,
        default=None,
        help="keep images sent within this many days (default: BONEFRAC_IMAGE_RETENTION_DAYS)",
    )
    args = parser.parse_args(argv)
    settings = Settings()
    secret = settings.database_url
    url = resolve_url(settings.records_dir, None if secret is None else secret.get_secret_value())
    engine = make_engine(url)
    try:
        migrate(engine)
        if args.command == "migrate":
            print(f"records database {describe(url)} at revision {current_revision(engine)}")
            return 0
        days = settings.image_retention_days if args.days is None else args.days
        if days < 1:
            parser.error("--days must be at least 1")
        deleted = purge_images(engine, days)
        print(f"purged {deleted} image(s) not sent in the last {days} day(s)")
        return 0
    except SQLAlchemyError as exc:
        print(f"error: records database {describe(url)}: {exc}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
