#!/usr/bin/env python
"""Run Django administrative tasks for batchsite."""

import os
import sys


def main():
    """Run the command line given in sys.argv."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # A setting that does not parse is the operator's to fix: one line, no traceback.
        sys.exit(f"batchsite is not configured right: {exc}")


if __name__ == "__main__":
    main()
