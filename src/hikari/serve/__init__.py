"""`hikari serve`: the cascade as a local web app and HTTP API (FastAPI), with an OpenAI-compatible chat endpoint.

    from hikari.serve import HikariService, create_app
"""

from hikari.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    "app": ("create_app",),
    "process": ("ServerProcess", "free_port"),
    "run": ("bind", "serve"),
    "service": ("CascadeRequest", "ChatAnswer", "ChatRequest", "HikariService", "StageModel"),
    "worker": ("BatchingWorker", "QueueFull"),
})  # fmt: skip
