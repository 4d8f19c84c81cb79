"""The fake OpenAI-compatible endpoint (tests/fake_openai.py) as a fixture here."""

from tests.fake_openai import chat_server  # noqa: F401  (a fixture: pytest finds it by name)
