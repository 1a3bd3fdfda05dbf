"""The HTTP layer: ``create_app(settings)`` and the OpenAI wire format."""
