"""PPD router (ppd-server), embedded engine (ppd-worker) and their tools."""
