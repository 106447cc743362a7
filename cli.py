"""rwkvjax command line. Run `python cli.py -h`."""

import sys

if __name__ == "__main__":
    try:
        from rwkvjax.cli import main
    except KeyboardInterrupt:  # Ctrl-C while the command table loads: one line, not a traceback
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(main())
