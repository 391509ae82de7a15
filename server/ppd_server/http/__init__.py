"""The router's HTTP surface: the aiohttp app (``app.create_app``), the OpenAI/SGLang front door,
the admin API, SGLang-compatible worker routes, auth and the OpenAI-style error shape. Handlers
receive :class:`~ppd_server.http.state.AppState`; nothing here decides a route (``routing/``) or
talks to a worker (``request_path/``)."""
