"""Job types that exist only for tests."""

from jobs import JobType


class Flaky(JobType):
    """Crash with a plain exception when the payload says so; echo otherwise."""

    name = "test.flaky"
    description = "Raises RuntimeError when payload.crash is true (tests only)."
    chunk_size = 100
    slice_size = 10

    def process(self, payload, file, context):
        """Crash or echo."""
        if payload.get("crash"):
            raise RuntimeError("boom")
        if payload.get("unserializable"):
            return {"value": object()}
        return payload
