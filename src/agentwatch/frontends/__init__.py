"""Front-end API shapes (Anthropic Messages, OpenAI Responses) translated onto the pivot."""
