"""One request's way through the router: ``turns`` builds the views and asks the policy,
``dispatch`` runs the chosen plan (``attempt``) against the workers over ``upstream`` (the worker
HTTP client), ``stream_relay`` relays a streamed answer, ``relay`` shapes the worker's answer back
to the client, ``token_count`` sizes prompts."""
