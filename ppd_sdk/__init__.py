"""PPD client SDK: multi-turn chat sessions with conversation ids and SLO hints."""
