"""Expose the WSGI callable for batchsite."""

import os

from django.core.wsgi import get_wsgi_application

from batchsite.content_type import wsgi_guarded

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "batchsite.settings")

application = wsgi_guarded(get_wsgi_application())
