import sys

from siftkit.cli import main

sys.exit(main())
