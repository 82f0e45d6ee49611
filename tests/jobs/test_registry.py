"""Tests for the job type registry and its system check."""

from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.core.management.base import SystemCheckError

from jobs import JobType, get_job_type, job_types, register, registry
from jobs.checks import check_job_types
from jobs.echo import Echo
from tests.jobtypes import Flaky


class EchoTwin(JobType):
    """A second type claiming the name `echo`."""

    name = "echo"


class Nameless(JobType):
    """A type that forgot its name."""


class Registered(JobType):
    """A type registered in code rather than through settings."""

    name = "test.registered"


@pytest.fixture
def fresh_registry(monkeypatch):
    """Give the test its own code-registered types, and forget them afterwards."""
    monkeypatch.setattr(registry, "_extra", {})
    job_types.cache_clear()
    yield
    job_types.cache_clear()


def test_job_types__built_ins_are_present():
    found = job_types()

    assert isinstance(found["echo"], Echo)
    assert get_job_type("echo") is found["echo"]


def test_get_job_type__unknown_name_is_none():
    assert get_job_type("no.such.type") is None


def test_job_types__settings_add_extra_types():
    # tests/settings.py names tests.jobtypes.Flaky.
    assert isinstance(get_job_type("test.flaky"), Flaky)


def test_job_types__follow_a_settings_change(settings):
    settings.BATCHSITE_JOB_TYPES = []
    assert get_job_type("test.flaky") is None
    assert get_job_type("echo") is not None

    settings.BATCHSITE_JOB_TYPES = ["tests.jobtypes.Flaky"]
    assert isinstance(get_job_type("test.flaky"), Flaky)


def test_job_types__the_same_class_twice_is_fine(settings):
    settings.BATCHSITE_JOB_TYPES = [
        "tests.jobtypes.Flaky",
        "tests.jobtypes.Flaky",
        "jobs.echo.Echo",
    ]

    assert set(job_types()) == {
        "echo",
        "test.flaky",
        "http.request",
        "email.send",
        "image.derive",
        "document.sign",
        "document.verify",
    }


@pytest.mark.parametrize(
    "path",
    ["tests.jobtypes.Missing", "no_such_module.Type", "notdotted"],
)
def test_job_types__bad_dotted_path_is_improperly_configured(settings, path):
    settings.BATCHSITE_JOB_TYPES = [path]

    with pytest.raises(ImproperlyConfigured, match="cannot be imported") as caught:
        job_types()

    assert repr(path) in str(caught.value)


def test_job_types__non_job_type_is_improperly_configured(settings):
    settings.BATCHSITE_JOB_TYPES = ["jobs.JobContext"]

    with pytest.raises(ImproperlyConfigured, match=r"not a subclass of jobs\.JobType"):
        job_types()


def test_job_types__nameless_type_is_improperly_configured(settings):
    settings.BATCHSITE_JOB_TYPES = [f"{__name__}.Nameless"]

    with pytest.raises(ImproperlyConfigured, match="has no name"):
        job_types()


def test_job_types__duplicate_name_is_improperly_configured(settings):
    settings.BATCHSITE_JOB_TYPES = [f"{__name__}.EchoTwin"]

    with pytest.raises(ImproperlyConfigured, match="'echo' is registered twice"):
        job_types()


def test_job_types__recover_once_the_setting_is_fixed(settings):
    settings.BATCHSITE_JOB_TYPES = ["tests.jobtypes.Missing"]
    with pytest.raises(ImproperlyConfigured):
        job_types()

    settings.BATCHSITE_JOB_TYPES = ["tests.jobtypes.Flaky"]

    assert isinstance(get_job_type("test.flaky"), Flaky)


def test_register__adds_a_type_in_code(fresh_registry):
    assert get_job_type("test.registered") is None

    returned = register(Registered)

    assert returned is Registered
    assert isinstance(get_job_type("test.registered"), Registered)


def test_register__duplicate_name_is_improperly_configured(fresh_registry):
    register(EchoTwin)

    with pytest.raises(ImproperlyConfigured, match="registered twice"):
        job_types()


def test_check_job_types__good_configuration_has_no_errors():
    assert check_job_types(None) == []


def test_check_job_types__bad_path_is_jobs_e001(settings):
    settings.BATCHSITE_JOB_TYPES = ["tests.jobtypes.Missing"]

    errors = check_job_types(None)

    assert [error.id for error in errors] == ["jobs.E001"]
    assert "tests.jobtypes.Missing" in errors[0].msg


def test_manage_check__fails_with_jobs_e001_for_a_bad_path(settings):
    settings.BATCHSITE_JOB_TYPES = ["tests.jobtypes.Missing"]

    with pytest.raises(SystemCheckError, match=r"jobs\.E001"):
        call_command("check")


def test_manage_check__fails_with_jobs_e001_for_a_taken_name(settings):
    settings.BATCHSITE_JOB_TYPES = [f"{__name__}.EchoTwin"]

    with pytest.raises(SystemCheckError, match=r"jobs\.E001"):
        call_command("check")


def test_manage_check__passes_with_the_test_settings(capsys):
    call_command("check")

    assert "no issues" in capsys.readouterr().out
