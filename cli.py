"""rwkvjax command line. Run `python cli.py -h`."""

import sys

from rwkvjax.cli import main

if __name__ == "__main__":
    sys.exit(main())
