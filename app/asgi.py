"""The ASGI entry point gunicorn imports: `app.asgi:app`."""

from .main import create_app

app = create_app()
