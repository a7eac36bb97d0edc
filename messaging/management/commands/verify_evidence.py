"""manage.py verify_evidence PACK.zip [--key KEY.pem]: the same checks as the pack's verify.py."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging.evidence import verify_pack


class Command(BaseCommand):
    help = "Verify an evidence pack offline: signatures, file hashes, seals and inclusion proofs."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("pack")
        parser.add_argument("--key", help="the evidence public key (PEM), obtained independently")

    def handle(self, *args: Any, **options: Any) -> None:
        argv = [options["pack"]] + (["--key", options["key"]] if options["key"] else [])
        if verify_pack.main(argv) != 0:
            raise CommandError("the evidence pack did not verify")
