"""Expose the ASGI callable for batchsite."""

import os

from django.core.asgi import get_asgi_application

from batchsite.content_type import asgi_guarded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")

application = asgi_guarded(get_asgi_application())
