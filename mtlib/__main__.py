import sys

from mtlib.cli import main

sys.exit(main())
