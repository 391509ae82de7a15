"""The workers behind the router: the registry and its load poller (``workers``), the parsers of
SGLang's load reports (``loads``) and the embedded ``ppd-worker`` cluster launcher (``launcher``)."""
