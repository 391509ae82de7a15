"""``python -m ppd_server.engine`` = ``ppd-worker``."""

from ppd_server.engine.cli import main

main()
