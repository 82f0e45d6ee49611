"""A third-party job type: count the words of a text (the README's example)."""

from jobs import JobType, PermanentError


class WordCount(JobType):
    name = "example.wordcount"
    description = "Counts the words in `text`; `min_words` makes shorter texts fail."
    payload_schema = {
        "type": "object",
        "required": ["text"],
        "properties": {
            "text": {"type": "string"},
            "min_words": {"type": "integer", "minimum": 0},
        },
        "additionalProperties": False,
    }

    def process(self, payload, file, context):
        words = len(payload["text"].split())
        if words < payload.get("min_words", 0):
            raise PermanentError(f"only {words} words", code="too_short")
        return {"words": words}
