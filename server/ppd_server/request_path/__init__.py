"""One request's way through the router: ``turns`` builds the views and asks the policy,
``dispatch`` runs the chosen plan against the workers over ``upstream`` (the worker HTTP client),
``relay`` shapes the worker's answer back to the client, ``token_count`` sizes prompts."""
