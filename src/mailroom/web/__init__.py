"""``mailroom web``: the operators' console, server-rendered (aiohttp's server, Jinja2
templates, one stylesheet, no JavaScript). Optional: ``pip install 'mailroom[web]'``;
nothing here is imported by ``mailroom run``. See docs/console.md."""
