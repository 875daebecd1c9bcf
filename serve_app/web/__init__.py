"""The browser page: `/` and its assets, served by the ingress itself from this package.

Plain HTML, CSS and ES modules, no build step. Every response carries a strict
Content-Security-Policy, and the scripts build the page with DOM text nodes only, so PR and
model text can never run as markup.
"""

from serve_app.web._routes import CONTENT_SECURITY_POLICY, web_routes

__all__ = ["CONTENT_SECURITY_POLICY", "web_routes"]
