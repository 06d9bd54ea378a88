import sys

from dslc.cli import main

sys.exit(main())
