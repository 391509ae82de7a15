"""LangChain chat model over the PPD wire contract."""
