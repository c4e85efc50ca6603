"""The flows' Prefect tasks: steps over the library, with their retries, caching and artifacts."""
