"""Settings for the test suite: the real settings, with a throw-away data dir and test DB.

Subprocesses started by tests (qcluster) import this module too and inherit the
environment set here, so they find the same data dir, test database and queue.
"""

import os
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "batchsite-tests-only-not-secret")
# Under pytest-xdist (`make test-fast`) the controller set the variables below before it
# started the workers, which inherit them: each worker takes its own data dir and queue
# (pytest-django gives each its own test database). Its qcluster subprocesses keep them.
_worker = os.environ.get("PYTEST_XDIST_WORKER")
if _worker and os.environ.get("BATCHSITE_TEST_WORKER") != _worker:
    os.environ["BATCHSITE_TEST_WORKER"] = _worker
    os.environ["BATCHSITE_DATA_DIR"] = tempfile.mkdtemp(prefix=f"batchsite-tests-{_worker}-")
    os.environ["BATCHSITE_QUEUE_NAME"] = f"batchsite-test-{os.getpid()}"
os.environ.setdefault("BATCHSITE_DATA_DIR", tempfile.mkdtemp(prefix="batchsite-tests-"))
os.environ.setdefault("BATCHSITE_QUEUE_NAME", f"batchsite-test-{os.getpid()}")

from batchsite.settings import *  # noqa: E402, F403 (after the environment is set)
from batchsite.settings import BATCHSITE_DATA_DIR, DATABASES, Q_CLUSTER  # noqa: E402

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
    "tests.jobtypes.StampThenFail",
]

# Cluster tests that send mail ask for the file backend, to count what was sent.
if os.environ.get("BATCHSITE_TEST_EMAIL_DIR"):
    EMAIL_BACKEND = "django.core.mail.backends.filebased.EmailBackend"
    EMAIL_FILE_PATH = os.environ["BATCHSITE_TEST_EMAIL_DIR"]
