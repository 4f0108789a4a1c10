"""Talking to model servers: the client with retries, providers and profiles, rate control, structured output."""
