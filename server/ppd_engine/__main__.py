"""``python -m ppd_engine`` = ``ppd-worker``."""

from ppd_engine.cli import main

main()
