"""The built-in OpenAI-compatible simulator, with the quirks of real servers as switches."""
