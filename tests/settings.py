"""Settings for the test suite: the real settings, with a throw-away data dir and test DB.

Subprocesses started by tests (qcluster) import this module too and inherit the
environment set here, so they find the same data dir, test database and queue.
"""

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "batchsite-tests-only-not-secret")
os.environ.setdefault("BATCHSITE_DATA_DIR", tempfile.mkdtemp(prefix="batchsite-tests-"))
os.environ.setdefault("BATCHSITE_QUEUE_NAME", f"batchsite-test-{os.getpid()}")

from batchsite.settings import *  # noqa: F403
from batchsite.settings import BATCHSITE_DATA_DIR, DATABASES, Q_CLUSTER

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so qcluster subprocesses share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(BATCHSITE_DATA_DIR / "test.sqlite3")}

# Unit tests run tasks inline; a test that starts a real cluster switches this off.
Q_CLUSTER["sync"] = os.environ.get("BATCHSITE_TEST_CLUSTER") != "1"

# Tests all over present bad keys from the test client's one address; the tests of the
# failed-authentication throttle turn it on (tests/security/test_auth_failures.py).
BATCHSITE_AUTH_FAILURES_PER_MINUTE = 0

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
BATCHSITE_JOB_TYPES = [
    "tests.jobtypes.Flaky",
    "tests.jobtypes.Record",
    "tests.jobtypes.Stamp",
    "tests.jobtypes.Paced",
    "tests.jobtypes.Hang",
    "tests.jobtypes.Block",
    "tests.jobtypes.Quartered",
]

# Cluster tests that send mail ask for the file backend, to count what was sent.
if os.environ.get("BATCHSITE_TEST_EMAIL_DIR"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["BATCHSITE_TEST_EMAIL_DIR"]
