import sys

from siftkit.cli.main import main

sys.exit(main())
