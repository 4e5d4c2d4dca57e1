"""The web app: login-protected Gradio UI behind an access-checking gate."""

from .render import DEMO_BANNER, status_banner
from .server import create_app, launch

__all__ = ["DEMO_BANNER", "create_app", "launch", "status_banner"]
