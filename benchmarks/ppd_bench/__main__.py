import sys

from ppd_bench.cli import main

sys.exit(main())
