"""manage.py import_dip_spec FOLDER [--name 2.1.0] [--make-default] [--replace]: load the official DIP
specification."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from messaging.validation.services import import_spec


class Command(BaseCommand):
    help = (
        "Load the official DIP OpenAPI specification (the *-unresolved.yaml files) from FOLDER into"
        " the schema registry as a named spec version, one resolved schema per interface variant."
        " Runs as the owner role. The files are read, never copied into the project."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("folder", help="the specification folder (or the folder holding it)")
        parser.add_argument(
            "--name", help="the spec version's name (default: the API version it declares)"
        )
        parser.add_argument(
            "--make-default",
            action="store_true",
            help="validate every tenant that is not pinned to a version with this one",
        )
        parser.add_argument(
            "--replace",
            action="store_true",
            help="replace a version of that name imported from other files",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            version, created = import_spec(
                directory=options["folder"],
                name=options["name"],
                replace=options["replace"],
                make_default=options["make_default"],
            )
        except ValueError as err:
            raise CommandError(str(err)) from err
        verb = "imported" if created else "already imported, unchanged:"
        self.stdout.write(
            f"{verb} spec version {version.name} (API {version.api_version or '?'}):"
            f" {version.schema_count} schemas from {version.source}"
            + ("; it is the default" if version.is_default else "")
        )
